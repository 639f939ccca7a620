//! Which shard this process is, from the options or from what the scheduler sets:
//! a Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`) or a Slurm job array
//! (`SLURM_ARRAY_TASK_*`).

use crate::error::{BatchError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// The shard from `index`/`count` when given, else from the environment `env`:
    /// - index: `JOB_COMPLETION_INDEX`, else
    ///   `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`;
    /// - count: `SLURM_ARRAY_TASK_COUNT`, else `CAMSTREAM_NUM_SHARDS`.
    ///
    /// Neither index nor count anywhere: one shard of one. An index without a count is
    /// an error (a Kubernetes Job does not tell its completions to its pods).
    pub fn resolve(
        index: Option<u64>,
        count: Option<u64>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        let num = |name: &'static str| -> Result<Option<u64>> {
            env(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| BatchError::BadOption {
                        name,
                        why: format!("`{v}` is not a whole number"),
                    })
                })
                .transpose()
        };
        let mut from = "shard_index";
        let index = match index {
            Some(i) => Some(i),
            None => match num("JOB_COMPLETION_INDEX")? {
                Some(i) => {
                    from = "JOB_COMPLETION_INDEX";
                    Some(i)
                }
                None => match num("SLURM_ARRAY_TASK_ID")? {
                    Some(id) => {
                        from = "SLURM_ARRAY_TASK_ID";
                        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                        Some(
                            id.checked_sub(min).ok_or_else(|| BatchError::BadOption {
                                name: "SLURM_ARRAY_TASK_ID",
                                why: format!("{id} is below SLURM_ARRAY_TASK_MIN {min}"),
                            })? / step,
                        )
                    }
                    None => None,
                },
            },
        };
        let count = match count {
            Some(c) => Some(c),
            None => match num("SLURM_ARRAY_TASK_COUNT")? {
                Some(c) => Some(c),
                None => num("CAMSTREAM_NUM_SHARDS")?,
            },
        };
        match (index, count) {
            (None, None) => Ok(Self::WHOLE),
            (None, Some(c)) => Err(BatchError::BadOption {
                name: "shard_index",
                why: format!("{c} shards but no index: set shard_index, JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID"),
            }),
            (Some(i), None) => Err(BatchError::BadOption {
                name: "num_shards",
                why: format!("shard {i} (from {from}) of how many? set num_shards or CAMSTREAM_NUM_SHARDS to the Job's completions"),
            }),
            (Some(_), Some(0)) => Err(BatchError::BadOption {
                name: "num_shards",
                why: "must be at least 1".into(),
            }),
            (Some(i), Some(c)) if i >= c => Err(BatchError::BadOption {
                name: "shard_index",
                why: format!("{i} (from {from}) is not below the shard count {c}"),
            }),
            (Some(index), Some(count)) => Ok(Shard { index, count }),
        }
    }

    /// `index-of-count`, the shard's name in summaries.
    pub fn name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn options_win_over_the_environment() {
        let e = env(&[("JOB_COMPLETION_INDEX", "2"), ("CAMSTREAM_NUM_SHARDS", "5")]);
        assert_eq!(
            Shard::resolve(Some(1), Some(3), &e).unwrap(),
            Shard { index: 1, count: 3 }
        );
        assert_eq!(
            Shard::resolve(None, None, &e).unwrap(),
            Shard { index: 2, count: 5 }
        );
    }

    #[test]
    fn slurm_arrays_with_a_minimum_and_a_step() {
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "14"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::resolve(None, None, &e).unwrap(),
            Shard { index: 2, count: 4 }
        );
    }

    #[test]
    fn an_index_needs_a_count_and_must_be_below_it() {
        let k8s = env(&[("JOB_COMPLETION_INDEX", "0")]);
        let err = Shard::resolve(None, None, &k8s).unwrap_err().to_string();
        assert!(err.contains("JOB_COMPLETION_INDEX"), "{err}");
        assert!(Shard::resolve(Some(3), Some(3), env(&[])).is_err());
        assert!(Shard::resolve(None, Some(3), env(&[])).is_err());
        assert!(Shard::resolve(Some(0), Some(0), env(&[])).is_err());
        assert_eq!(Shard::resolve(None, None, env(&[])).unwrap(), Shard::WHOLE);
        let junk = env(&[("JOB_COMPLETION_INDEX", "x")]);
        assert!(Shard::resolve(None, None, &junk).is_err());
    }
}
