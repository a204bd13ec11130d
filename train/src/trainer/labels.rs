//! A guard against training on labels that are not there.

use crate::model::Task;
use anyhow::{bail, Result};
use facekit_data::Batch;

/// Stops a run whose training sets carry no label for what it learns: Gender on data without
/// gender labels would train at loss 0 and "finish". Decided after [`LabelGuard::STEPS`] steps
/// (or at the end of a shorter run): with shuffled batches, a label held by even one image in a
/// few hundred has then been seen.
pub(crate) struct LabelGuard {
    task: Task,
    seen: [u64; 3],
    steps: u64,
    decided: bool,
}

impl LabelGuard {
    /// Steps after which the guard decides.
    pub const STEPS: u64 = 100;

    /// A guard for `task`, deciding after its first steps.
    pub fn new(task: Task) -> Self {
        LabelGuard { task, seen: [0; 3], steps: 0, decided: false }
    }

    /// Counts the labels of one training batch; an error once it is decided that the task's
    /// labels are missing.
    pub fn observe(&mut self, batch: &Batch, at_end: bool) -> Result<()> {
        if self.decided {
            return Ok(());
        }
        self.steps += 1;
        for (n, labels) in self.seen.iter_mut().zip([&batch.class, &batch.gender, &batch.age]) {
            *n += labels.iter().filter(|&&l| l >= 0).count() as u64;
        }
        if !at_end && self.steps < Self::STEPS {
            return Ok(());
        }
        self.decided = true;
        let [class, gender, age] = self.seen;
        let missing = match self.task {
            Task::Gender if gender == 0 => Some("gender"),
            Task::Age if age == 0 => Some("age"),
            Task::Multi if class + gender + age == 0 => Some("identity, gender or age"),
            _ => None,
        };
        if let Some(what) = missing {
            bail!(
                "none of the images of the first {} step(s) has a {what} label: the training sets carry none, and the loss \
                 would be 0 throughout (pack them with --attributes or --utkface-labels)",
                self.steps
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(gender: i64) -> Batch {
        Batch {
            n: 2,
            size: 1,
            images: vec![0; 6].into(),
            class: vec![3, 4],
            gender: vec![gender; 2],
            age: vec![-1; 2],
            indices: vec![0, 1],
            flipped: vec![false; 2],
        }
    }

    #[test]
    fn gender_without_gender_labels_is_refused_once_decided() {
        let mut g = LabelGuard::new(Task::Gender);
        for _ in 0..LabelGuard::STEPS - 1 {
            g.observe(&batch(-1), false).unwrap();
        }
        let err = g.observe(&batch(-1), false).unwrap_err().to_string();
        assert!(err.contains("gender label"), "{err}");
        let mut g = LabelGuard::new(Task::Gender);
        g.observe(&batch(1), true).unwrap();
        assert!(LabelGuard::new(Task::Fr).observe(&batch(-1), true).is_ok(), "FR needs identities, checked elsewhere");
    }
}
