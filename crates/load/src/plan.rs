//! The load's job plan as a pure state machine: which job may start next, given what is done
//! and what is running. [`crate::graph`] drives it over real connections; the rules are
//! unit-tested here without a database.
//!
//! Rules: a job is ready once every job it comes `after` is done; among ready jobs the
//! heaviest starts first (ties: the earlier job), and two `exclusive` jobs never run at once.

/// What the plan needs to know of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// Indexes of jobs that must finish first.
    pub after: Vec<usize>,
    /// Relative cost; the heaviest ready job starts first.
    pub weight: u64,
    /// Runs alone among exclusive jobs.
    pub exclusive: bool,
}

/// A plan that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("job {job} depends on job {on}, which does not exist or is itself")]
    BadDependency { job: usize, on: usize },
    #[error("the jobs {0:?} depend on each other in a cycle")]
    Cycle(Vec<usize>),
}

/// The state of a plan being run.
#[derive(Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    /// Unfinished dependencies per job.
    waiting: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    ready: Vec<usize>,
    running: Vec<usize>,
    done: usize,
}

impl Plan {
    /// Checks the dependencies (each exists, none is the job itself, no cycle).
    pub fn new(steps: Vec<Step>) -> Result<Plan, PlanError> {
        let n = steps.len();
        let mut dependents = vec![Vec::new(); n];
        for (i, s) in steps.iter().enumerate() {
            if let Some(&on) = s.after.iter().find(|&&d| d >= n || d == i) {
                return Err(PlanError::BadDependency { job: i, on });
            }
            for &d in &s.after {
                dependents[d].push(i);
            }
        }
        let waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
        // Kahn's algorithm: whatever cannot be reached from the roots is in a cycle.
        let mut left = waiting.clone();
        let mut queue: Vec<usize> = (0..n).filter(|&i| left[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop() {
            seen += 1;
            for &d in &dependents[i] {
                left[d] -= 1;
                if left[d] == 0 {
                    queue.push(d);
                }
            }
        }
        if seen < n {
            return Err(PlanError::Cycle((0..n).filter(|&i| left[i] > 0).collect()));
        }
        let ready = (0..n).filter(|&i| waiting[i] == 0).collect();
        Ok(Plan {
            steps,
            waiting,
            dependents,
            ready,
            running: Vec::new(),
            done: 0,
        })
    }

    /// The job to start now, if one may start; it is counted as running.
    pub fn start_next(&mut self) -> Option<usize> {
        let exclusive_busy = self.running.iter().any(|&j| self.steps[j].exclusive);
        let k = (0..self.ready.len())
            .filter(|&k| !(exclusive_busy && self.steps[self.ready[k]].exclusive))
            .max_by_key(|&k| (self.steps[self.ready[k]].weight, std::cmp::Reverse(self.ready[k])))?;
        let i = self.ready.swap_remove(k);
        self.running.push(i);
        Some(i)
    }

    /// Job `i` finished well: the jobs waiting only for it become ready.
    pub fn finish(&mut self, i: usize) {
        self.running.retain(|&j| j != i);
        self.done += 1;
        for &d in &self.dependents[i] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.push(d);
            }
        }
    }

    /// Job `i` stopped (failed or cancelled): it is no longer running; nothing after it starts.
    pub fn abandon(&mut self, i: usize) {
        self.running.retain(|&j| j != i);
    }

    /// The jobs running now.
    #[cfg(test)]
    pub fn running(&self) -> &[usize] {
        &self.running
    }

    /// Every job has finished.
    pub fn is_complete(&self) -> bool {
        self.done == self.steps.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(after: &[usize], weight: u64, exclusive: bool) -> Step {
        Step {
            after: after.to_vec(),
            weight,
            exclusive,
        }
    }

    /// Runs the plan with `slots` connections, finishing jobs in the order they started;
    /// returns the order of starts and, for each start, what else was running.
    fn simulate(plan: &mut Plan, slots: usize) -> Vec<(usize, Vec<usize>)> {
        let mut log = Vec::new();
        loop {
            while plan.running().len() < slots {
                let Some(i) = plan.start_next() else { break };
                let others = plan.running().iter().copied().filter(|&j| j != i).collect();
                log.push((i, others));
            }
            let Some(&first) = plan.running().first() else { break };
            plan.finish(first);
        }
        log
    }

    #[test]
    fn heaviest_ready_job_first_and_dependents_after() {
        // 0: ratings COPY (heavy), 1: movies COPY, 2: ratings index (after 0), 3: FK (after 0, 1)
        let mut p = Plan::new(vec![
            step(&[], 100, false),
            step(&[], 10, false),
            step(&[0], 50, true),
            step(&[0, 1], 1, false),
        ])
        .unwrap();
        assert_eq!(p.start_next(), Some(0), "the heaviest starts first");
        assert_eq!(p.start_next(), Some(1));
        assert_eq!(p.start_next(), None, "nothing else is ready");
        p.finish(1);
        assert_eq!(p.start_next(), None, "the FK still waits for the ratings COPY");
        p.finish(0);
        assert_eq!(p.start_next(), Some(2));
        assert_eq!(p.start_next(), Some(3));
        p.finish(2);
        p.finish(3);
        assert!(p.is_complete());
    }

    #[test]
    fn exclusive_jobs_never_overlap_but_others_run_beside_them() {
        // Two big index builds (exclusive) and a small report, on three connections.
        let mut p = Plan::new(vec![step(&[], 50, true), step(&[], 40, true), step(&[], 1, false)]).unwrap();
        let log = simulate(&mut p, 3);
        assert_eq!(log[0], (0, vec![]));
        assert_eq!(log[1], (2, vec![0]), "the small job runs beside the first index build");
        assert_eq!(log[2].0, 1);
        assert!(!log[2].1.contains(&0), "the second build waited for the first: {log:?}");
        assert!(p.is_complete());
    }

    #[test]
    fn ties_go_to_the_earlier_job_so_runs_repeat() {
        let mut p = Plan::new(vec![step(&[], 5, false), step(&[], 5, false), step(&[], 5, false)]).unwrap();
        let order: Vec<usize> = simulate(&mut p, 1).into_iter().map(|(i, _)| i).collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn bad_dependencies_and_cycles_are_refused() {
        assert_eq!(
            Plan::new(vec![step(&[0], 1, false)]).unwrap_err(),
            PlanError::BadDependency { job: 0, on: 0 }
        );
        assert_eq!(
            Plan::new(vec![step(&[3], 1, false)]).unwrap_err(),
            PlanError::BadDependency { job: 0, on: 3 }
        );
        assert_eq!(
            Plan::new(vec![step(&[], 1, false), step(&[2], 1, false), step(&[1], 1, false)]).unwrap_err(),
            PlanError::Cycle(vec![1, 2])
        );
    }

    #[test]
    fn an_abandoned_job_releases_its_slot_and_blocks_its_dependents() {
        let mut p = Plan::new(vec![step(&[], 2, true), step(&[0], 1, true), step(&[], 1, true)]).unwrap();
        assert_eq!(p.start_next(), Some(0));
        assert_eq!(p.start_next(), None, "exclusive 2 waits");
        p.abandon(0);
        assert_eq!(p.start_next(), Some(2), "the slot is free again");
        p.finish(2);
        assert_eq!(p.start_next(), None, "job 1 never becomes ready");
        assert!(!p.is_complete());
    }
}
