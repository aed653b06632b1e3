//! `--filter` and `--exclude`: globs over test ids (`tests/test_io.py::test_read*`,
//! `src/lib.rs::parser::*`, `pkg/**`), the same for every framework, applied to the units found
//! before anything is scheduled. In the file part `*` stays inside one folder and `**` crosses
//! folders; in the case part (after `::`) `*` matches anything. A pattern without `::` takes
//! every case of the files it matches.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::Error;

/// One pattern, compiled: its file part (`*` stays inside a folder, `**` crosses them) and its
/// case part after the first `::`, if any (where `*` matches anything, `::` included).
#[derive(Clone, Debug)]
struct Pattern {
    file: GlobMatcher,
    case: Option<GlobMatcher>,
}

impl Pattern {
    fn new(text: &str) -> Result<Pattern, Error> {
        let text = text.strip_prefix("./").unwrap_or(text);
        let bad = |source| Error::BadFilter { pattern: text.to_string(), source };
        let (file, case) = match text.split_once("::") {
            Some((file, case)) => (file, Some(case)),
            None => (text, None),
        };
        let file = GlobBuilder::new(file).literal_separator(true).build().map_err(bad)?.compile_matcher();
        let case = case.map(|c| GlobBuilder::new(c).build().map_err(bad)).transpose()?.map(|g| g.compile_matcher());
        Ok(Pattern { file, case })
    }

    fn matches(&self, id: &str) -> bool {
        // vitest's `|PROJECT| FILE` ids match by their file.
        let id = testgrid_proto::js::split_project(id).1;
        let (file, case) = match id.split_once("::") {
            Some((file, case)) => (file, Some(case)),
            None => (id, None),
        };
        self.file.is_match(file)
            && match (&self.case, case) {
                (None, _) => true,
                (Some(pattern), Some(case)) => pattern.is_match(case),
                (Some(_), None) => false,
            }
    }
}

/// The `--filter`s and `--exclude`s of a session.
#[derive(Clone, Debug, Default)]
pub struct IdFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl IdFilter {
    pub fn new(filters: &[String], excludes: &[String]) -> Result<IdFilter, Error> {
        let compile = |patterns: &[String]| patterns.iter().map(|p| Pattern::new(p)).collect::<Result<Vec<_>, _>>();
        Ok(IdFilter { include: compile(filters)?, exclude: compile(excludes)? })
    }

    /// Whether a pattern names cases, so that file units must become their cases first.
    pub fn names_cases(&self) -> bool {
        self.include.iter().chain(&self.exclude).any(|p| p.case.is_some())
    }

    /// Whether the test with this id stays.
    pub fn keeps(&self, id: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(id)))
            && !self.exclude.iter().any(|p| p.matches(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> IdFilter {
        let owned = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IdFilter::new(&owned(include), &owned(exclude)).expect("valid patterns")
    }

    #[test]
    fn globs_match_ids_files_take_their_cases_and_excludes_win() {
        let f = filter(&["tests/test_io.py::test_read*", "src/lib.rs::parser::*"], &[]);
        assert!(f.names_cases());
        assert!(f.keeps("tests/test_io.py::test_read_big"));
        assert!(!f.keeps("tests/test_io.py::test_write"));
        assert!(f.keeps("src/lib.rs::parser::a::b"), "`*` crosses `::`");
        assert!(!f.keeps("src/lib.rs::lexer::a"));
        let files = filter(&["tests/*.py"], &["tests/test_slow.py", "**::*slow*"]);
        assert!(files.keeps("tests/test_io.py"));
        assert!(files.keeps("tests/test_io.py::test_read"), "a file pattern takes the file's cases");
        assert!(!files.keeps("tests/sub/test_io.py"), "`*` stays in one folder");
        assert!(!files.keeps("tests/test_slow.py"));
        assert!(!files.keeps("tests/test_io.py::test_slow_read"));
        assert!(!filter(&[], &["**::*::fails"]).keeps("src/lib.rs::tests::fails"));
        assert!(filter(&[], &["**::*::fails"]).keeps("src/lib.rs::tests::fails_not"));
        assert!(filter(&[], &["**::fails"]).keeps("src/lib.rs::tests::fails"), "the case part matches whole");
        assert!(!filter(&["a.py::x"], &[]).keeps("a.py"), "a case pattern does not take a whole file");
        assert!(filter(&["./pkg/**"], &[]).keeps("pkg/a/b"));
        assert!(filter(&["src/a.test.ts"], &[]).keeps("|unit| src/a.test.ts"));
        assert!(filter(&[], &[]).keeps("anything"));
    }

    #[test]
    fn a_bad_pattern_is_refused_by_name() {
        let err = IdFilter::new(&["tests/[".to_string()], &[]).expect_err("unclosed class");
        assert!(err.to_string().contains("tests/["), "{err}");
    }
}
