use super::*;
use crate::limit::Unit;
use crate::limit::calendar::Calendar;

fn limit(algorithm: Algorithm, rpu: u64, unit: Unit, burst: u64) -> Limit {
    Limit {
        requests_per_unit: rpu,
        unit,
        unit_multiplier: 1,
        algorithm,
        burst,
        calendar: None,
    }
}

fn check(limit: Limit) -> Check<'static> {
    Check {
        key: b"k",
        limit,
        hits: 1,
        group: 0,
        count_when_denied: false,
    }
}

#[test]
fn windows_and_buckets_are_leased_sliding_and_calendar_windows_are_not() {
    let fixed = || check(limit(Algorithm::FixedWindow, 10, Unit::Second, 10));
    let bucket = || check(limit(Algorithm::TokenBucket, 10, Unit::Second, 10));
    let sliding = check(limit(Algorithm::SlidingWindow, 10, Unit::Second, 10));
    assert!(leasable(&[fixed(), bucket()]));
    assert!(!leasable(&[fixed(), bucket(), sliding]));
    let mut calendar = fixed();
    calendar.limit.calendar = Some(Calendar::utc());
    assert!(!leasable(&[calendar, bucket()]));
}

#[test]
fn a_lease_lasts_the_time_to_refill_the_burst_within_bounds() {
    let ttl = |rpu, unit, burst| bucket_ttl(&limit(Algorithm::TokenBucket, rpu, unit, burst));
    assert_eq!(ttl(10, Unit::Second, 5), Duration::from_millis(500));
    assert_eq!(ttl(1000, Unit::Second, 10), BUCKET_TTL_MIN);
    assert_eq!(ttl(10, Unit::Day, 1000), BUCKET_TTL_MAX);
    assert_eq!(ttl(u64::MAX, Unit::Second, 1), BUCKET_TTL_MIN);
    assert_eq!(ttl(1, Unit::Year, u64::MAX), BUCKET_TTL_MAX);
}

#[test]
fn a_claim_is_needed_only_when_the_lease_falls_short_and_the_fleet_may_not() {
    let l = limit(Algorithm::TokenBucket, 10, Unit::Second, 20);
    let now = Instant::now();
    // Never claimed: claim; more than the burst, or nothing: never.
    assert!(bucket_needs_claim(None, &l, 1, now));
    assert!(!bucket_needs_claim(None, &l, 21, now));
    assert!(!bucket_needs_claim(None, &l, 0, now));
    let mut lease = BucketLease::new(now);
    lease.seq = 1;
    lease.granted = 4;
    lease.held = 3;
    lease.until = now + Duration::from_secs(1);
    lease.level = 2;
    // Held tokens cover it.
    assert!(!bucket_needs_claim(Some(&lease), &l, 3, now));
    // Held plus the central level may: claim.
    assert!(bucket_needs_claim(Some(&lease), &l, 5, now));
    // Cannot, as far as this instance knows: deny without asking...
    assert!(!bucket_needs_claim(Some(&lease), &l, 6, now));
    // ...until the central level has refilled (10 a second).
    assert!(bucket_needs_claim(
        Some(&lease),
        &l,
        6,
        now + Duration::from_millis(100)
    ));
    // An expired lease holds nothing.
    let later = now + Duration::from_secs(1);
    assert_eq!(lease.held_at(later), 0);
    assert_eq!(lease.central(&l, later), Some(12));
}
