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
    if "html" in report:
        cov.html_report(ignore_errors=True, directory=report["html"])
        out.write(f"Coverage HTML written to dir {report['html'] or cov.config.html_dir}\n")
    if "xml" in report:
        cov.xml_report(ignore_errors=True, outfile=report["xml"])
        out.write(f"Coverage XML written to file {report['xml'] or cov.config.xml_output}\n")
    if "json" in report:
        cov.json_report(ignore_errors=True, outfile=report["json"])
        out.write(f"Coverage JSON written to file {report['json'] or cov.config.json_output}\n")
    if "lcov" in report:
        cov.lcov_report(ignore_errors=True, outfile=report["lcov"])
        out.write(f"Coverage LCOV written to file {report['lcov'] or cov.config.lcov_output}\n")
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
