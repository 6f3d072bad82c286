//! Schedules: standard 5-field cron expressions and `@monthly`-style presets in an IANA time
//! zone, and which logical period each fire loads.
//!
//! A fire at time T loads the period of its *data interval* [previous fire, T), as Airflow
//! does: with `0 3 1 * *` the fire on 2026-12-01 03:00 loads period `2026-11`. For schedules
//! that fire more often than monthly, every fire maps to the month its interval starts in, and
//! fires of a month that already has a run are no-ops.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::Period;

#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("invalid schedule {expr:?}: {detail}")]
    Cron { expr: String, detail: String },
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Berlin)")]
    TimeZone(String),
}

impl Schedule {
    pub fn new(expr: &str, tz: &str) -> Result<Schedule, ScheduleError> {
        let tz: Tz = tz.parse().map_err(|_| ScheduleError::TimeZone(tz.to_string()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Schedule { cron, tz })
    }

    pub fn describe(&self) -> String {
        format!("{} ({})", self.cron.describe(), self.tz)
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The period a fire at `fire` loads: the month (in the schedule's zone) in which its data
    /// interval starts.
    pub fn period_of_fire(&self, fire: DateTime<Utc>) -> Option<Period> {
        let start = self
            .cron
            .find_previous_occurrence(&fire.with_timezone(&self.tz), false)
            .ok()?;
        Period::new(start.year(), start.month())
    }

    /// Periods whose fire is due by `now`, for fires after the start of `start` (in the
    /// schedule's zone), oldest first, without repeats. At most `limit` of the most recent are
    /// returned.
    pub fn due_periods(&self, start: Period, now: DateTime<Utc>, limit: usize) -> Vec<Period> {
        let Some(begin) = self
            .tz
            .with_ymd_and_hms(start.year(), start.month(), 1, 0, 0, 0)
            .earliest()
        else {
            return vec![];
        };
        let mut out: Vec<Period> = Vec::new();
        let mut t = begin.with_timezone(&Utc);
        // Walk fires forward; each yields the period its interval starts in.
        while let Some(fire) = self.next_after(t) {
            if fire > now {
                break;
            }
            if let Some(p) = self.period_of_fire(fire) {
                if p >= start && out.last() != Some(&p) {
                    out.push(p);
                }
            }
            t = fire;
            if out.len() > 100_000 {
                break;
            }
        }
        let skip = out.len().saturating_sub(limit);
        out.split_off(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn monthly_fire_loads_previous_month() {
        let s = Schedule::new("0 3 1 * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-26T10:00:00Z")),
            Some(utc("2026-12-01T03:00:00Z"))
        );
        assert_eq!(
            s.period_of_fire(utc("2026-12-01T03:00:00Z")),
            Some("2026-11".parse().unwrap())
        );
        let p = Schedule::new("@monthly", "UTC").unwrap();
        assert_eq!(
            p.period_of_fire(utc("2027-01-01T00:00:00Z")),
            Some("2026-12".parse().unwrap())
        );
    }

    #[test]
    fn time_zone_and_dst() {
        // 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
        let s = Schedule::new("0 3 1 * *", "Europe/Berlin").unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-15T00:00:00Z")),
            Some(utc("2026-02-01T02:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-06-15T00:00:00Z")),
            Some(utc("2026-07-01T01:00:00Z"))
        );
        // A daily 02:30 fire on the spring-forward day (2026-03-29, 02:00 -> 03:00) still fires once.
        let d = Schedule::new("30 2 * * *", "Europe/Berlin").unwrap();
        let next = d.next_after(utc("2026-03-28T12:00:00Z")).unwrap();
        assert!(
            next >= utc("2026-03-29T00:00:00Z") && next <= utc("2026-03-30T01:00:00Z"),
            "{next}"
        );
    }

    #[test]
    fn due_periods_catch_up_with_cap() {
        let s = Schedule::new("0 3 1 * *", "UTC").unwrap();
        let start: Period = "2026-06".parse().unwrap();
        let now = utc("2026-11-26T10:00:00Z");
        let all: Vec<String> = s.due_periods(start, now, 100).iter().map(|p| p.to_string()).collect();
        // Fires on Jul 1 .. Nov 1 load June .. October; the November run fires on Dec 1.
        assert_eq!(all, ["2026-06", "2026-07", "2026-08", "2026-09", "2026-10"]);
        let capped: Vec<String> = s.due_periods(start, now, 2).iter().map(|p| p.to_string()).collect();
        assert_eq!(capped, ["2026-09", "2026-10"]);
        let daily = Schedule::new("@daily", "UTC").unwrap();
        let d: Vec<String> = daily
            .due_periods("2026-10".parse().unwrap(), now, 100)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(d, ["2026-10", "2026-11"]);
    }

    #[test]
    fn rejects_bad_expressions() {
        assert!(
            Schedule::new("0 0 3 1 * *", "UTC").is_err(),
            "6 fields (seconds) are not standard cron"
        );
        assert!(Schedule::new("61 * * * *", "UTC").is_err());
        assert!(matches!(
            Schedule::new("@monthly", "Mars/Base"),
            Err(ScheduleError::TimeZone(_))
        ));
    }
}
