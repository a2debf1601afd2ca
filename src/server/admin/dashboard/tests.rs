use super::*;

#[test]
fn inlined_json_cannot_close_the_script_element() {
    let text = json_for_html(&serde_json::json!({"v": "</script><b>&"})).unwrap();
    assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["v"], "</script><b>&");
}
