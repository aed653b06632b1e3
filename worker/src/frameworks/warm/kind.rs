//! Which framework a warm runner drives, and what differs between them: the runner file shipped
//! inside this binary, JUnit class names, wording.
//!
//! Pure: it must not start runners.

use testgrid_proto::frameworks::Framework;

/// Which framework a warm runner drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pytest,
    Vitest,
    Jest,
}

impl Kind {
    /// The warm runner for a session's framework, if there is one.
    pub fn of(framework: Framework) -> Option<Kind> {
        match framework {
            Framework::Pytest => Some(Kind::Pytest),
            Framework::Vitest => Some(Kind::Vitest),
            Framework::Jest => Some(Kind::Jest),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pytest => "pytest",
            Kind::Vitest => "vitest",
            Kind::Jest => "jest",
        }
    }

    /// The runner's file name and text, written next to its socket at start.
    pub fn runner(self) -> (&'static str, &'static str) {
        match self {
            Kind::Pytest => ("testgrid_pytest.py", include_str!("../../runners/testgrid_pytest.py")),
            Kind::Vitest => ("testgrid_vitest.mjs", include_str!("../../runners/testgrid_vitest.mjs")),
            Kind::Jest => ("testgrid_jest.cjs", include_str!("../../runners/testgrid_jest.cjs")),
        }
    }

    /// Files the runner loads from its own folder.
    pub fn support_files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Pytest => &[],
            Kind::Vitest | Kind::Jest => {
                &[("testgrid_runner_common.cjs", include_str!("../../runners/testgrid_runner_common.cjs"))]
            }
        }
    }

    /// What the cases of the unit `path` (`FILE` or `FILE::CASE`) are filed under in JUnit: the
    /// dotted module for Python (as pytest's own JUnit), the file for JavaScript (as vitest's and
    /// jest-junit's).
    pub fn classname(self, path: &str) -> String {
        let file = path.split_once("::").map(|(f, _)| f).unwrap_or(path);
        match self {
            Kind::Pytest => file.trim_end_matches(".py").replace('/', "."),
            Kind::Vitest | Kind::Jest => file.to_string(),
        }
    }

    /// Whether the runner takes its slot's next file while one runs, queued behind it, and says
    /// when each begins. vitest does: its pool keeps a worker (and, with `isolate: false`, its
    /// environment and imported modules) only while another file is queued for it.
    pub fn pipelines(self) -> bool {
        matches!(self, Kind::Vitest)
    }

    /// Whether one runner may serve every slot of a session on a worker (if, once started, it
    /// says it can: [`super::protocol::FromRunner::Ready`]). vitest's does: its pool runs a file
    /// per busy slot, and one vite server transforms each module once for all of them.
    pub fn shares(self) -> bool {
        matches!(self, Kind::Vitest)
    }

    /// Why collected cases got no result when the file ended normally.
    pub fn stopped_early(self) -> &'static str {
        match self {
            Kind::Pytest => "not run: pytest stopped early (-x, --maxfail or pytest.exit)",
            Kind::Vitest | Kind::Jest => "not run: the file ended before it",
        }
    }

    /// What to do when the runner cannot be started at all.
    pub fn start_fix(self) -> &'static str {
        match self {
            Kind::Pytest => {
                "pass `testgrid run --python PATH`, or start the worker with `--python` (TESTGRID_PYTHON), naming a Python with pytest"
            }
            Kind::Vitest | Kind::Jest => {
                "install Node.js on the worker, or start the worker with `--node` (TESTGRID_NODE)"
            }
        }
    }

    /// A hint from a runner's last words when it did not start (`program`: what was started).
    pub fn start_hint(self, tail: &str, program: &str) -> String {
        match self {
            Kind::Pytest if tail.contains("No module named pytest") || tail.contains("No such file") => {
                format!(
                    " (is pytest installed for `{program}`? pass `testgrid run --python PATH` to pick another Python)"
                )
            }
            Kind::Vitest | Kind::Jest
                if tail.contains("Cannot find")
                    || tail.contains("MODULE_NOT_FOUND")
                    || tail.contains("cannot find") =>
            {
                format!(
                    " (is {} installed in the project? run `npm ci` there; the worker's `--node` (TESTGRID_NODE) picks another Node)",
                    self.name()
                )
            }
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_come_from_the_file_part() {
        assert_eq!(Kind::Pytest.classname("t/test_a.py::TestX"), "t.test_a");
        assert_eq!(Kind::Vitest.classname("src/a.test.ts::outer > inner"), "src/a.test.ts");
        assert!(Kind::Jest.start_hint("Error: Cannot find module 'jest'", "node").contains("npm ci"));
        assert_eq!(Kind::Pytest.start_hint("all fine", "python3"), "");
    }
}
