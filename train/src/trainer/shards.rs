//! [`HeadShards`]: Partial FC's class centres as checkpoints see them, whole, though each rank
//! trains only its rows (see [`super::checkpoint::Shards`]).

use super::checkpoint::Shards;
use crate::dist::ProcessGroup;
use crate::loss::{gather_rows, shard_range, take_rows};
use anyhow::Result;
use std::rc::Rc;
use tch::Tensor;

/// The name of the identity head's centres, full or sharded.
pub(crate) const HEAD_WEIGHT: &str = "arcface.weight";

/// This rank's rows of the `classes` centres (and of their optimiser state) over `group`.
pub(crate) struct HeadShards {
    group: Rc<ProcessGroup>,
    classes: i64,
    start: i64,
    len: i64,
}

impl HeadShards {
    /// The sharding of `classes` centres over the ranks of `group`.
    pub fn new(group: Rc<ProcessGroup>, classes: i64) -> Self {
        let (start, len) = shard_range(classes, group.rank(), group.size());
        HeadShards { group, classes, start, len }
    }
}

impl Shards for HeadShards {
    fn holds(&self, name: &str) -> bool {
        name == HEAD_WEIGHT
    }

    fn gather(&self, local: &Tensor) -> Result<Tensor> {
        gather_rows(&self.group, local, self.classes)
    }

    fn take(&self, whole: &Tensor) -> Result<Tensor> {
        take_rows(whole, self.start, self.len)
    }
}
