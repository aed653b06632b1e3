//! `--secret NAME`: a variable passed to the tests whose value never leaves a worker in a
//! report. The worker masks every occurrence of each secret's value as `***` in a report's
//! output, message and cases before it sends it, so no event, log, JUnit file or stored output
//! can hold it.

use crate::v1 as pb;

/// What a secret's value becomes.
pub const MASK: &str = "***";

/// The values to mask: non-empty, each once, longest first (so a secret that contains another
/// is masked whole).
pub fn values<'a>(names: &[String], env: impl Fn(&str) -> Option<&'a str>) -> Vec<String> {
    let mut values: Vec<String> =
        names.iter().filter_map(|n| env(n)).filter(|v| !v.is_empty()).map(str::to_string).collect();
    values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    values.dedup();
    values
}

/// `bytes` with every occurrence of each of `secrets` replaced by [`MASK`].
pub fn mask_bytes(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets {
        let needle = secret.as_bytes();
        if needle.is_empty() || out.len() < needle.len() {
            continue;
        }
        let mut masked = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                masked.extend_from_slice(MASK.as_bytes());
                i += needle.len();
            } else {
                masked.push(out[i]);
                i += 1;
            }
        }
        out = masked;
    }
    out
}

fn mask_text(text: &mut String, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), MASK);
        }
    }
}

/// Mask `secrets` everywhere in `report`.
pub fn mask_report(report: &mut pb::TestReport, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    report.output = mask_bytes(&report.output, secrets);
    mask_text(&mut report.message, secrets);
    for case in &mut report.cases {
        case.output = mask_bytes(&case.output, secrets);
        mask_text(&mut case.message, secrets);
        mask_text(&mut case.name, secrets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_is_masked_longest_first() {
        let env = |name: &str| match name {
            "A" => Some("hunter2"),
            "B" => Some("hunter2-long"),
            "EMPTY" => Some(""),
            _ => None,
        };
        let secrets = values(&["A".into(), "B".into(), "EMPTY".into(), "MISSING".into()], env);
        assert_eq!(secrets, ["hunter2-long", "hunter2"]);
        let mut report = pb::TestReport {
            output: b"key=hunter2-long; again hunter2hunter2\xff".to_vec(),
            message: "failed with hunter2".into(),
            cases: vec![pb::CaseResult {
                output: b"hunter2".to_vec(),
                message: "x hunter2".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        mask_report(&mut report, &secrets);
        assert_eq!(report.output, b"key=***; again ******\xff".to_vec());
        assert_eq!(report.message, "failed with ***");
        assert_eq!((report.cases[0].output.as_slice(), report.cases[0].message.as_str()), (&b"***"[..], "x ***"));
    }
}
