//! [`Ddp`]: the trainer's [`Replicas`] as PyTorch's DistributedDataParallel does them, over a
//! c10d process group and DDP's own Reducer.

use super::agree::{agree, Identity};
use super::group::{ProcessGroup, ReduceOp};
use super::reducer::Reducer;
use crate::trainer::optim::trainable_by_name;
use crate::trainer::Replicas;
use anyhow::{Context, Result};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// One rank of a data-parallel run: gradients averaged by DDP's Reducer during backward, batch
/// norm's statistics broadcast from rank 0 before each synchronised forward pass (DDP's
/// `broadcast_buffers`), decisions and logged losses reduced over the ranks.
pub struct Ddp {
    group: ProcessGroup,
    /// Where the small tensors of agreements live: the CPU for Gloo, this rank's GPU for NCCL.
    device: Device,
    /// A Gloo group of the same ranks for the per-step host decisions (a stop request, a corrupt
    /// record) when `group` is NCCL: agreeing there would copy a flag to the GPU and read it back,
    /// which waits for the queued step on every step. Over Gloo it costs one small round trip on
    /// the host while the GPU goes on.
    host: Option<ProcessGroup>,
    reducer: Option<Reducer>,
    /// The variables that are not trained (running statistics), in name order.
    buffers: Vec<Tensor>,
    find_unused: bool,
}

impl Ddp {
    /// Replicas over `group`; `device` is the training device (the agreements' tensors go to it
    /// under NCCL, which reduces CUDA tensors only).
    pub fn new(group: ProcessGroup, device: Device) -> Ddp {
        let device = group.tensor_device(device);
        Ddp { group, device, host: None, reducer: None, buffers: Vec::new(), find_unused: false }
    }

    /// Takes the host decisions ([`Replicas::agree_any`]) over `host`, a CPU (Gloo) group of the
    /// same ranks, instead of the training group.
    pub fn with_host_group(mut self, host: ProcessGroup) -> Ddp {
        self.host = Some(host);
        self
    }

    fn broadcast_buffers(&self) -> Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let refs: Vec<&Tensor> = self.buffers.iter().collect();
        tch::no_grad(|| self.group.broadcast(&refs, 0)).context("broadcasting batch norm statistics from rank 0")
    }
}

impl Replicas for Ddp {
    fn world_size(&self) -> usize {
        self.group.size()
    }

    fn rank(&self) -> usize {
        self.group.rank()
    }

    fn attach(&mut self, vs: &VarStore, local: &[String], find_unused: bool) -> Result<()> {
        let mut all: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(n, _)| !local.contains(n)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        // Before the broadcast: variables of another size on some rank abort inside Gloo.
        let identity = Identity::of_variables(all.iter().map(|(n, t)| (n.as_str(), t)));
        agree(&self.group, &identity, "network (variable names and shapes)", self.device)?;
        let refs: Vec<&Tensor> = all.iter().map(|(_, t)| t).collect();
        tch::no_grad(|| self.group.broadcast(&refs, 0)).context("broadcasting the initial weights from rank 0")?;
        let params: Vec<Tensor> =
            trainable_by_name(vs).into_iter().filter(|(n, _)| !local.contains(n)).map(|(_, t)| t).collect();
        let refs: Vec<&Tensor> = params.iter().collect();
        self.reducer = Some(Reducer::new(&self.group, &refs, find_unused)?);
        self.buffers = all.into_iter().filter(|(_, t)| !t.requires_grad()).map(|(_, t)| t).collect();
        self.find_unused = find_unused;
        Ok(())
    }

    fn before_forward(&mut self, sync: bool) -> Result<()> {
        if !sync {
            return Ok(());
        }
        self.broadcast_buffers()?;
        self.reducer.as_mut().context("DDP: attach() was not called")?.prepare_forward()
    }

    fn before_backward(&mut self, outputs: &[&Tensor], sync: bool) -> Result<()> {
        if !sync {
            return Ok(());
        }
        // Only find-unused mode walks the graph from the outputs, as distributed.py passes them.
        let outputs = if self.find_unused { outputs } else { &[] };
        self.reducer.as_mut().context("DDP: attach() was not called")?.prepare_backward(outputs)
    }

    fn reduce_gradients(&mut self, _vs: &VarStore) -> Result<()> {
        // The Reducer has averaged every bucket by the time backward returns.
        Ok(())
    }

    fn agree_any(&mut self, local: bool) -> Result<bool> {
        let (group, device) = match &self.host {
            Some(host) => (host, Device::Cpu),
            None => (&self.group, self.device),
        };
        let flag = Tensor::from_slice(&[f32::from(u8::from(local))]).to_device(device);
        group.all_reduce(&[&flag], ReduceOp::Max).context("agreeing across ranks")?;
        Ok(flag.double_value(&[0]) > 0.0)
    }

    fn mean(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_kind(Kind::Double).to_device(self.device);
        self.group.all_reduce(&[&t], ReduceOp::Avg).context("averaging the losses across ranks")?;
        Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu))?)
    }

    fn mean_device(&mut self, t: &Tensor) -> Result<()> {
        self.group.all_reduce(&[t], ReduceOp::Avg).context("averaging the losses across ranks")
    }

    fn any_device(&mut self, flag: &Tensor) -> Result<()> {
        self.group.all_reduce(&[flag], ReduceOp::Max).context("agreeing on a skipped step across ranks")
    }

    fn sync_buffers(&mut self, _vs: &VarStore) -> Result<()> {
        self.broadcast_buffers()
    }

    fn barrier(&mut self) -> Result<()> {
        self.group.barrier().context("waiting for every rank at the end of the run")
    }

    fn group(&self) -> Result<ProcessGroup> {
        // The same group: the head's collectives are issued in the same order on every rank,
        // interleaved with the Reducer's, as partial_fc_v2 shares DDP's default group.
        self.group.try_clone()
    }
}
