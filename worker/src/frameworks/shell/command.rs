//! Turning an assignment's command line into a process to start.
//!
//! Most commands are a program and its arguments (`sh tests/a.sh`, `python3 -m pytest -q x.py`).
//! Those are started directly, which saves a shell process per test; anything that needs the
//! shell (operators, redirections, expansions, globs, assignments, builtins) runs through
//! `sh -c`, exactly as written.
//!
//! Pure: it decides, it must not start anything.

use std::path::Path;

/// The argv to start directly, or `None` when the command needs `sh -c`.
pub fn direct_argv(command: &str) -> Option<Vec<String>> {
    if !is_plain(command) {
        return None;
    }
    let argv = shlex::split(command)?;
    let program = argv.first()?;
    // `FOO=1 cmd` is an assignment, and builtins (`cd`, `:`) have no file to run.
    if program.contains('=') || !is_executable(program) {
        return None;
    }
    Some(argv)
}

/// True when the command has no shell syntax besides words, spaces and quotes: outside single
/// quotes no operator, redirection, expansion, glob or escape; inside double quotes no `$`,
/// backquote or backslash.
fn is_plain(command: &str) -> bool {
    #[derive(PartialEq)]
    enum State {
        Bare,
        Single,
        Double,
    }
    let mut state = State::Bare;
    for c in command.chars() {
        match state {
            State::Bare => match c {
                '\'' => state = State::Single,
                '"' => state = State::Double,
                ' ' | '\t' => {}
                ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '\\' | '*' | '?' | '[' | ']' | '{' | '}'
                | '~' | '#' | '!' | '\n' | '\r' => return false,
                _ => {}
            },
            State::Single => {
                if c == '\'' {
                    state = State::Bare;
                }
            }
            State::Double => match c {
                '"' => state = State::Bare,
                '$' | '`' | '\\' => return false,
                _ => {}
            },
        }
    }
    state == State::Bare
}

/// Whether `program` names an executable file (a path, or a name found on `PATH`).
fn is_executable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        // Relative paths resolve against the test's working directory; leave those to the shell
        // so its error messages and lookup rules apply unchanged.
        return Path::new(program).is_absolute() && runnable(Path::new(program));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| runnable(&dir.join(program))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_run_directly() {
        assert_eq!(direct_argv("sh tests/a.sh"), Some(vec!["sh".into(), "tests/a.sh".into()]));
        assert_eq!(direct_argv("sh 'dir with space/a b.sh'"), Some(vec!["sh".into(), "dir with space/a b.sh".into()]));
        assert_eq!(direct_argv(r#"sh "it's.sh""#), Some(vec!["sh".into(), "it's.sh".into()]));
        assert_eq!(direct_argv("sh '$(not expanded).sh'"), Some(vec!["sh".into(), "$(not expanded).sh".into()]));
    }

    #[test]
    fn shell_syntax_goes_through_the_shell() {
        for command in [
            "sh a.sh && echo done",
            "sh a.sh; true",
            "sh a.sh > out",
            "echo $HOME",
            r#"echo "$HOME""#,
            "sh tests/*.sh",
            "FOO=1 sh a.sh",
            "cd sub && sh a.sh",
            ": a.sh",
            "exit 0",
            "sh 'unterminated",
            "sh a\\ b.sh",
            "no-such-program-anywhere x",
        ] {
            assert_eq!(direct_argv(command), None, "{command}");
        }
    }
}
