//! Arguments for Go tests (what the user typed after `--`, as they would give `go test`),
//! sorted the way `go test` sorts them: build flags go to the package's compile (`go test -c`),
//! test flags to its test binary (as `-test.NAME`). Shared by the CLI, which refuses what cannot
//! be used before a session starts, and the worker, which runs them.

/// `go test` flags that go to the test binary, and whether each takes a value.
const TEST_FLAGS: [(&str, bool); 27] = [
    ("bench", true),
    ("benchmem", false),
    ("benchtime", true),
    ("blockprofile", true),
    ("blockprofilerate", true),
    ("count", true),
    ("coverprofile", true),
    ("cpu", true),
    ("cpuprofile", true),
    ("failfast", false),
    ("fullpath", false),
    ("fuzz", true),
    ("fuzzminimizetime", true),
    ("fuzztime", true),
    ("memprofile", true),
    ("memprofilerate", true),
    ("mutexprofile", true),
    ("mutexprofilefraction", true),
    ("outputdir", true),
    ("parallel", true),
    ("run", true),
    ("short", false),
    ("shuffle", true),
    ("skip", true),
    ("timeout", true),
    ("trace", true),
    ("v", false),
];

/// `go build` flags that `go test -c` takes, and whether each takes a value.
const BUILD_FLAGS: [(&str, bool); 26] = [
    ("a", false),
    ("asan", false),
    ("asmflags", true),
    ("buildmode", true),
    ("buildvcs", true),
    ("compiler", true),
    ("cover", false),
    ("covermode", true),
    ("coverpkg", true),
    ("gccgoflags", true),
    ("gcflags", true),
    ("installsuffix", true),
    ("ldflags", true),
    ("linkshared", false),
    ("mod", true),
    ("modcacherw", false),
    ("modfile", true),
    ("msan", false),
    ("overlay", true),
    ("p", true),
    ("pgo", true),
    ("pkgdir", true),
    ("race", false),
    ("tags", true),
    ("toolexec", true),
    ("trimpath", false),
];

/// Go arguments, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoArgs {
    /// For `go test -c` (`-tags=x`, `-race`).
    pub build: Vec<String>,
    /// For the test binary, already in its own spelling (`-test.run=TestRead`).
    pub test: Vec<String>,
    /// Whether they pick tests (`-run`, `-skip`): a package none of whose tests is picked is
    /// reported as such, not as passed.
    pub selects: bool,
}

impl GoArgs {
    /// Sort `args`; the problem if one is not a `go test` flag testgrid can pass on.
    pub fn split(args: &[String]) -> Result<GoArgs, String> {
        let mut out = GoArgs::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "-args" || arg == "--args" {
                // Everything after goes to the test binary as it is, as with `go test -args`.
                out.test.extend(rest.by_ref().cloned());
                break;
            }
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|f| !f.is_empty()) else {
                return Err(format!(
                    "`{}` is not a flag: name Go packages as paths before `--`, flags after it",
                    shown(arg)
                ));
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (flag, None),
            };
            let name = name.strip_prefix("test.").unwrap_or(name);
            if matches!(name, "json" | "c" | "o" | "exec" | "vet" | "list" | "i") {
                return Err(format!("`-{name}` is for `go test` itself; testgrid runs the tests its own way"));
            }
            let (test, takes_value) =
                match (TEST_FLAGS.iter().find(|f| f.0 == name), BUILD_FLAGS.iter().find(|f| f.0 == name)) {
                    (Some(&(_, value)), _) => (true, value),
                    (None, Some(&(_, value))) => (false, value),
                    (None, None) => return Err(format!("`-{}` is not a `go test` flag", shown(name))),
                };
            let value = match (takes_value, inline) {
                (true, Some(value)) => Some(value),
                (true, None) => Some(rest.next().ok_or_else(|| format!("`-{name}` needs a value"))?.clone()),
                (false, inline) => inline,
            };
            if test {
                if name == "v" {
                    // The worker runs every test binary verbose already (its events need it).
                    continue;
                }
                out.selects |= matches!(name, "run" | "skip");
                out.test.push(match value {
                    Some(value) => format!("-test.{name}={value}"),
                    None => format!("-test.{name}"),
                });
            } else {
                out.build.push(match value {
                    Some(value) => format!("-{name}={value}"),
                    None => format!("-{name}"),
                });
            }
        }
        Ok(out)
    }
}

/// An argument as an error shows it: its start.
fn shown(arg: &str) -> String {
    const MAX: usize = 64;
    let start: String = arg.chars().take(MAX).collect();
    if arg.chars().nth(MAX).is_some() { format!("{start}…") } else { start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn build_flags_go_to_the_compile_and_test_flags_to_the_binary() {
        let split =
            GoArgs::split(&args(&["-run", "TestRead", "-tags=integration", "-race", "-count=1", "-v", "-short"]))
                .expect("valid");
        assert_eq!(split.build, args(&["-tags=integration", "-race"]));
        assert_eq!(split.test, args(&["-test.run=TestRead", "-test.count=1", "-test.short"]));
        assert!(split.selects);
        let plain = GoArgs::split(&args(&["-count", "2", "-args", "-custom", "x"])).expect("valid");
        assert_eq!(plain.test, args(&["-test.count=2", "-custom", "x"]));
        assert!(!plain.selects);
    }

    #[test]
    fn what_cannot_be_passed_on_is_refused_by_name() {
        assert!(GoArgs::split(&args(&["./pkg"])).expect_err("a path").contains("not a flag"));
        assert!(GoArgs::split(&args(&["-json"])).expect_err("go test's own").contains("-json"));
        assert!(GoArgs::split(&args(&["-frobnicate"])).expect_err("unknown").contains("-frobnicate"));
        assert!(GoArgs::split(&args(&["-run"])).expect_err("no value").contains("needs a value"));
        let long = GoArgs::split(&args(&[&format!("-{}", "x".repeat(5000))])).expect_err("unknown");
        assert!(long.len() < 200, "not echoed whole: {}", long.len());
    }
}
