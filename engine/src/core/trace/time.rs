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
}
