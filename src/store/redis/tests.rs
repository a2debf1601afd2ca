use super::connect::redact;
use super::script::redis_key;
use super::*;

fn put(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&u32::try_from(s.len()).unwrap_or(0).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

#[test]
fn redis_keys_carry_the_tag_in_hex() {
    // Enough keys that some tags start with zero digits (1 in 16 each).
    for n in 0..200 {
        let mut key = Vec::new();
        put(&mut key, "domain");
        put(&mut key, "k");
        put(&mut key, &n.to_string());
        key.extend_from_slice(b"f\x00\x01");
        let tag = key::hash_tag(&key);
        let mut expected = format!("p:{{{tag:016x}}}").into_bytes();
        expected.extend_from_slice(&key);
        assert_eq!(redis_key(b"p:", &key), expected);
    }
}

#[test]
fn redaction_hides_the_password() {
    assert_eq!(redact("redis://u:secret@h:1/0"), "redis://***@h:1/0");
    assert_eq!(redact("redis://h:1"), "redis://h:1");
}
