//! Every pair of embeddings whose cosine similarity reaches a threshold, by exact blocked matrix
//! products on libtorch: no index to build or tune, and a block's scores never leave the device
//! except for the pairs above the threshold (docs/PERFORMANCE.md, "Audit").

use tch::{Device, Kind, Tensor};

/// Rows of the left matrix per product.
pub const ROW_BLOCK: i64 = 4096;
/// Rows of the right matrix per product: a block of scores is `ROW_BLOCK * COL_BLOCK` floats (64 MiB).
pub const COL_BLOCK: i64 = 4096;

/// `n x dim` rows (L2-normalised by the caller) as a tensor on `device`.
pub fn matrix(values: &[f32], dim: usize, device: Device) -> Tensor {
    let n = values.len().checked_div(dim).unwrap_or(0);
    Tensor::from_slice(values).view([n as i64, dim as i64]).to_device(device)
}

/// Pairs `(i, j, similarity)` with `a[i] . b[j] >= threshold`, in row-major order; with `b`
/// absent, pairs of `a` with itself with `i < j`.
pub fn pairs_above(a: &Tensor, b: Option<&Tensor>, threshold: f32) -> Vec<(usize, usize, f32)> {
    let same = b.is_none();
    let b = b.unwrap_or(a);
    let (n, m) = (a.size()[0], b.size()[0]);
    let mut out = Vec::new();
    tch::no_grad(|| {
        for i0 in (0..n).step_by(ROW_BLOCK as usize) {
            let r = ROW_BLOCK.min(n - i0);
            let rows = a.narrow(0, i0, r);
            // Below the diagonal a pair would be found twice: start at the first block that holds j > i.
            let start = if same { (i0 / COL_BLOCK) * COL_BLOCK } else { 0 };
            for j0 in (start..m).step_by(COL_BLOCK as usize) {
                let c = COL_BLOCK.min(m - j0);
                let scores = rows.mm(&b.narrow(0, j0, c).transpose(0, 1));
                let mut mask = scores.ge(f64::from(threshold));
                if same && j0 < i0 + r {
                    let ri = Tensor::arange_start(i0, i0 + r, (Kind::Int64, a.device())).unsqueeze(1);
                    let ci = Tensor::arange_start(j0, j0 + c, (Kind::Int64, a.device())).unsqueeze(0);
                    mask = mask.logical_and(&ci.gt_tensor(&ri));
                }
                let idx = mask.nonzero();
                let k = idx.size()[0];
                if k == 0 {
                    continue;
                }
                let vals = Vec::<f32>::try_from(scores.masked_select(&mask).to_device(Device::Cpu)).unwrap_or_default();
                let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default();
                for (p, v) in idx.chunks_exact(2).zip(vals) {
                    out.push(((i0 + p[0]) as usize, (j0 + p[1]) as usize, v));
                }
            }
        }
    });
    out
}
