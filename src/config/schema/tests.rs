use super::scalars::edit_distance;
use super::*;
use marked_yaml::types::MarkedScalarNode;

fn scalar(text: &str, plain: bool) -> MarkedScalarNode {
    let mut node = MarkedScalarNode::from(text);
    node.set_coerce(plain);
    node
}

#[test]
fn classify_like_yaml_v2() {
    assert_eq!(classify(&scalar("123", true)), Kind::Int(123));
    assert_eq!(classify(&scalar("1_000", true)), Kind::Int(1000));
    assert_eq!(classify(&scalar("0x10", true)), Kind::Int(16));
    assert_eq!(classify(&scalar("-5", true)), Kind::Int(-5));
    assert_eq!(classify(&scalar("010", true)), Kind::Int(8));
    assert_eq!(classify(&scalar("1.5", true)), Kind::Float);
    assert_eq!(classify(&scalar(".5", true)), Kind::Float);
    assert_eq!(classify(&scalar("1e3", true)), Kind::Float);
    assert_eq!(classify(&scalar(".inf", true)), Kind::Float);
    assert_eq!(classify(&scalar("1.5", false)), Kind::Str);
    assert_eq!(classify(&scalar("yes", true)), Kind::Bool(true));
    assert_eq!(classify(&scalar("Off", true)), Kind::Bool(false));
    assert_eq!(classify(&scalar("true", false)), Kind::Str);
    assert_eq!(classify(&scalar("~", true)), Kind::Null);
    assert_eq!(classify(&scalar("", true)), Kind::Null);
    assert_eq!(classify(&scalar("1.2.3", true)), Kind::Str);
    assert_eq!(classify(&scalar("10.0.0.1", true)), Kind::Str);
    assert_eq!(classify(&scalar("abc", true)), Kind::Str);
    assert_eq!(classify(&scalar("-", true)), Kind::Str);
    assert_eq!(
        classify(&scalar("9223372036854775807", true)),
        Kind::Int(i128::from(i64::MAX))
    );
    assert_eq!(classify(&scalar("9223372036854775808", true)), Kind::Float);
    assert_eq!(classify(&scalar("99999999999999999999", true)), Kind::Float);
}

#[test]
fn edit_distance_works() {
    assert_eq!(edit_distance("ratelimit", "rate_limit"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
}
