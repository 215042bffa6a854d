//! `mixed`: the scenarios at once against one target, as a platform sees
//! them: `idle` sessions held for the whole run, and the workers split by
//! weight between `connect`, `interactive` and `bulk`.

use std::sync::Arc;

use super::{Ctx, bulk, connect, idle, interactive};

/// Relative numbers of workers per scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    pub connect: u32,
    pub interactive: u32,
    pub bulk: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            connect: 1,
            interactive: 2,
            bulk: 1,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `connect=1,interactive=2,bulk=1` (missing names weigh 0).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix {
            connect: 0,
            interactive: 0,
            bulk: 0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected NAME=WEIGHT"))?;
            let weight: u32 = weight
                .parse()
                .map_err(|_| format!("{part:?}: the weight must be a whole number"))?;
            match name {
                "connect" => mix.connect = weight,
                "interactive" => mix.interactive = weight,
                "bulk" => mix.bulk = weight,
                _ => return Err(format!("{name:?}: expected connect, interactive or bulk")),
            }
        }
        if mix.connect + mix.interactive + mix.bulk == 0 {
            return Err(
                "the mix has no weight: give at least one of connect, interactive, bulk".into(),
            );
        }
        Ok(mix)
    }
}

impl Mix {
    /// `workers` split by weight; every scenario with a weight gets at
    /// least one, the remainder goes to the largest weights first.
    pub fn split(&self, workers: usize) -> [usize; 3] {
        let weights = [self.connect, self.interactive, self.bulk];
        let total: u32 = weights.iter().sum();
        let mut out = [0usize; 3];
        for (o, w) in out.iter_mut().zip(weights) {
            *o = workers * w as usize / total as usize;
            if w > 0 && *o == 0 {
                *o = 1;
            }
        }
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(weights[i]));
        let mut i = 0;
        while out.iter().sum::<usize>() < workers {
            out[order[i % 3]] += usize::from(weights[order[i % 3]] > 0);
            i += 1;
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    pub mix: Mix,
    pub connect: connect::Params,
    pub interactive: interactive::Params,
    pub bulk: bulk::Params,
    pub idle: idle::Params,
}

pub async fn run(ctx: Arc<Ctx>, p: Params) -> Vec<idle::Cost> {
    let workers = p.connect.concurrency;
    let [c, i, b] = p.mix.split(workers);
    let connect = connect::run(
        ctx.clone(),
        connect::Params {
            concurrency: c,
            ..p.connect
        },
    );
    let interactive = interactive::run(
        ctx.clone(),
        interactive::Params {
            concurrency: i,
            ..p.interactive
        },
    );
    let bulk = bulk::run(
        ctx.clone(),
        bulk::Params {
            concurrency: b,
            ..p.bulk
        },
    );
    let idle = async {
        if p.idle.sessions == 0 {
            Vec::new()
        } else {
            idle::run(ctx.clone(), p.idle).await
        }
    };
    let (_, _, _, costs) = tokio::join!(connect, interactive, bulk, idle);
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_splits_workers_by_weight() {
        let m: Mix = "connect=1,interactive=2,bulk=1".parse().unwrap();
        assert_eq!(m, Mix::default());
        assert_eq!(m.split(8), [2, 4, 2]);
        assert_eq!(m.split(2), [1, 1, 1]);
        assert_eq!(m.split(9).iter().sum::<usize>(), 9);
        let only: Mix = "bulk=3".parse().unwrap();
        assert_eq!(only.split(4), [0, 0, 4]);
        assert!(
            "bulk=x"
                .parse::<Mix>()
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            "ftp=1"
                .parse::<Mix>()
                .unwrap_err()
                .contains("expected connect")
        );
        assert!(
            "connect=0"
                .parse::<Mix>()
                .unwrap_err()
                .contains("no weight")
        );
    }
}
