"""The reports of a session's combined pytest-cov data, as pytest-cov writes them at the end of one
`pytest --cov` run (its `--cov-report` types and paths, `--cov-fail-under`).

    python testgrid_pytest_cov.py OPTIONS_JSON

runs in the project's folder after `coverage combine` has combined every runner's data file
into the project's data file. OPTIONS_JSON is what a runner saw of pytest-cov's options:
{"report": {TYPE: PATH or MODIFIER or null} or [TYPE, ...], "fail_under": N or null,
"precision": N}. Exit 2 when the total is under fail_under (as `coverage report --fail-under`).
"""

import json
import sys

import coverage


class _Null:
    def write(self, _text):
        pass


def main(path):
    with open(path, encoding="utf-8") as f:
        options = json.load(f)
    report = options.get("report") or {}
    if isinstance(report, list):
        report = {kind: None for kind in report}
    precision = options.get("precision") or 0
    fail_under = options.get("fail_under")
    cov = coverage.Coverage()
    cov.load()
    out = sys.stdout
    total = cov.report(ignore_errors=True, file=_Null(), precision=precision)
    if "term" in report or "term-missing" in report:
        skip_covered = "skip-covered" in report.values()
        cov.report(
            ignore_errors=True,
            file=out,
            show_missing=("term-missing" in report) or None,
            skip_covered=skip_covered or None,
            precision=precision,
        )
    if "annotate" in report:
        cov.annotate(ignore_errors=True, directory=report["annotate"])
        out.write(f"Coverage annotated source written to dir {report['annotate'] or '(next to source)'}\n")
    # The file reports: pytest-cov's option name, coverage's method, its keyword, its default.
    files = (
        ("html", cov.html_report, "directory", "HTML written to dir", cov.config.html_dir),
        ("xml", cov.xml_report, "outfile", "XML written to file", cov.config.xml_output),
        ("json", cov.json_report, "outfile", "JSON written to file", cov.config.json_output),
        # lcov came in coverage 6.3.
        ("lcov", getattr(cov, "lcov_report", None), "outfile", "LCOV written to file", getattr(cov.config, "lcov_output", None)),
    )
    for kind, write, keyword, said, default in files:
        if kind in report and write is not None:
            write(ignore_errors=True, **{keyword: report[kind]})
            out.write(f"Coverage {said} {report[kind] or default}\n")
    for kind, mode in (("markdown", "w"), ("markdown-append", "a")):
        if kind in report:
            with open(report[kind] or "coverage.md", mode, encoding="utf-8") as f:
                cov.report(ignore_errors=True, file=f, output_format="markdown", precision=precision)
            out.write(f"Coverage Markdown information written to file {report[kind] or 'coverage.md'}\n")
    if fail_under is not None and fail_under > 0 and round(total, precision) < fail_under:
        out.write(f"FAIL Required test coverage of {fail_under}% not reached. Total coverage: {total:.{precision}f}%\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
