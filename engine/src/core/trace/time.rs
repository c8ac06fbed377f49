//! The product's `Time` strings.

/// `yyyy-MM-dd HH:mm:ss.SSS` of `ms` since the Unix epoch, shifted by
/// `offset_minutes`.
pub fn format_time(ms: u64, offset_minutes: i32) -> String {
    let shifted = ms as i64 + i64::from(offset_minutes) * 60_000;
    let (days, rest) = (
        shifted.div_euclid(86_400_000),
        shifted.rem_euclid(86_400_000),
    );
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}.{milli:03}")
}

/// `yyyy-MM-ddTHH:mm:ssZ` (ISO 8601, UTC: the OpenAPI's `Timestamp` and
/// `x-acs-date`) of `secs` since the Unix epoch.
pub fn format_utc(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s) = (rest / 3600, rest / 60 % 60, rest % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

/// Seconds since the Unix epoch of `yyyy-MM-ddTHH:mm:ssZ` (fractional
/// seconds allowed and ignored); `None` if it is not that.
pub fn parse_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let s = s.split_once('.').map_or(s, |(whole, _)| whole);
    let (date, time) = s.split_once('T')?;
    let num = |part: &str, len: usize| -> Option<i64> {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let mut t = time.split(':');
    let (h, min, sec) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + sec)
}

/// Day number since 1970-01-01 of a date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day of a day number since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_like_the_product() {
        // 2021-05-21 07:51:54.867 UTC is 15:51:54.867 in China.
        assert_eq!(
            format_time(1_621_583_514_867, 480),
            "2021-05-21 15:51:54.867"
        );
        assert_eq!(format_time(0, 0), "1970-01-01 00:00:00.000");
        assert_eq!(format_time(951_782_400_000, 0), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn utc_timestamps_round_trip() {
        for secs in [0, 951_782_400, 1_764_489_600, 4_102_444_799] {
            assert_eq!(parse_utc(&format_utc(secs)), Some(secs));
        }
        assert_eq!(
            parse_utc("2026-11-30T08:01:02.123Z"),
            parse_utc("2026-11-30T08:01:02Z")
        );
        for bad in [
            "2026-11-30 08:01:02Z",
            "2026-13-01T00:00:00Z",
            "2026-11-30T08:01:02",
            "x",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }
}
