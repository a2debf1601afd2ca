use super::*;

fn options(tags: &[(&str, &str)], dogstatsd: bool) -> StatsdOptions {
    StatsdOptions {
        target: "127.0.0.1:8125".to_owned(),
        interval: Duration::from_secs(10),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        dogstatsd,
    }
}

#[test]
fn lines_carry_deltas_and_tags_in_either_syntax() {
    let plain = options(&[("a", "1"), ("b", "2")], false);
    assert_eq!(line("x.y", 3, &plain), "x.y.__a=1.__b=2:3|c");
    let dog = options(&[("a", "1"), ("b", "2")], true);
    assert_eq!(line("x.y", 3, &dog), "x.y:3|c|#a:1,b:2");
    assert_eq!(line("x.y", 1, &options(&[], true)), "x.y:1|c");
}

#[test]
fn flushes_send_what_counted_since_the_last_one_in_bounded_datagrams() {
    let stats = ReferenceStats::new(None, 10);
    let options = options(&[], false);
    assert!(flush_datagrams(&stats, &options).is_empty());
    for i in 0..200 {
        let own = stats.rule_stats(&format!("d.key_{i:0>40}"));
        stats.add(
            &own,
            "d",
            &crate::rules::Rule {
                id: std::sync::Arc::from("d.k"),
                limits: Vec::new(),
                unlimited: false,
                shadow_mode: false,
                quota_mode: false,
                replaces: Vec::new(),
                name: None,
                reference_form: true,
                counts_denied_hits: true,
                header_limit: None,
                detailed_metric: false,
                value_to_metric: Vec::new(),
                stat_levels: Vec::new(),
            },
            &crate::proto::RateLimitDescriptor::default(),
            crate::observe::counts::RuleCounts {
                hits: 2,
                ..Default::default()
            },
        );
    }
    let datagrams = flush_datagrams(&stats, &options);
    assert!(datagrams.len() > 1, "split: {}", datagrams.len());
    assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
    let lines: Vec<&str> = datagrams.iter().flat_map(|d| d.lines()).collect();
    assert_eq!(lines.len(), 200, "one per counter that moved");
    assert!(
        lines.iter().all(|l| l.ends_with(".total_hits:2|c")),
        "{lines:?}"
    );
    // Nothing moved since: nothing to send.
    assert!(flush_datagrams(&stats, &options).is_empty());
}
