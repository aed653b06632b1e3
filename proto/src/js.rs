//! JavaScript test units that name their vitest project, the contract between the CLI that lists
//! them and the worker (and its vitest runner) that runs them.
//!
//! A file vitest lists in several projects is one unit per project, written `|PROJECT| FILE`
//! (vitest's own notation in its output); a file in one project is plain `FILE`. A project name
//! that cannot be written so (a `|`, a control character, surrounding spaces, over 200 bytes)
//! is refused where the unit is made.

/// Longest project name a unit may carry.
pub const MAX_PROJECT_NAME: usize = 200;

/// `|NAME| `, the front of a unit in project `name`; `None` when the name cannot be written so.
pub fn project_prefix(name: &str) -> Option<String> {
    let fits = name.len() <= MAX_PROJECT_NAME
        && !name.contains('|')
        && !name.chars().any(char::is_control)
        && name.trim() == name;
    fits.then(|| format!("|{name}| "))
}

/// A unit `|PROJECT| FILE` (or a case id built on it) split into its `|PROJECT| ` front (empty
/// when there is none) and the rest.
pub fn split_project(path: &str) -> (&str, &str) {
    if let Some(after) = path.strip_prefix('|')
        && let Some(end) = after.find("| ")
    {
        return path.split_at(end + 3);
    }
    ("", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_in_front_of_a_path_is_written_and_split_off() {
        assert_eq!(project_prefix("unit").as_deref(), Some("|unit| "));
        assert_eq!(project_prefix("a|b"), None);
        assert_eq!(project_prefix(" unit"), None);
        assert_eq!(project_prefix("bell\u{7}"), None);
        assert_eq!(project_prefix(&"x".repeat(MAX_PROJECT_NAME + 1)), None);
        assert_eq!(split_project("|unit| shared/s.test.js"), ("|unit| ", "shared/s.test.js"));
        assert_eq!(split_project("|unit| a.test.js::x > y"), ("|unit| ", "a.test.js::x > y"));
        assert_eq!(split_project("shared/s.test.js"), ("", "shared/s.test.js"));
        assert_eq!(split_project("|no end"), ("", "|no end"));
    }
}
