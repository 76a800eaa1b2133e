use super::{Field, line, push_timestamp, sink::Format};

fn fields(subject: &str) -> [(&'static str, Field<'_>); 3] {
    [
        ("route", Field::Str("r")),
        ("subject", Field::Str(subject)),
        ("status", Field::Num(403)),
    ]
}

#[test]
fn a_json_line_is_one_object_whatever_a_subject_holds() {
    let hostile = "al\"ice\n{\"decision\":\"allow\"}";
    let out = line(Format::Json, &fields(hostile));
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "one line: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["subject"], hostile);
    assert_eq!(v["status"], 403);
    assert_eq!(v["target"], "scopegate::audit");
    assert_eq!(v["level"], "INFO");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
}

#[test]
fn a_text_line_quotes_every_string() {
    let out = String::from_utf8(line(Format::Text, &fields("al\"ice\n"))).unwrap();
    assert!(
        out.ends_with(
            " INFO scopegate::audit: decision route=\"r\" subject=\"al\\\"ice\\n\" status=403\n"
        ),
        "{out}"
    );
    assert_eq!(out.matches('\n').count(), 1);
}

#[test]
fn a_timestamp_is_humantimes_rfc3339_with_microseconds() {
    use std::time::{Duration, UNIX_EPOCH};
    for micros in [0, 7, 123_456, 999_999] {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_533_394) + Duration::from_micros(micros);
        let mut out = Vec::new();
        push_timestamp(&mut out, at);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            humantime::format_rfc3339_micros(at).to_string()
        );
    }
}
