//! PyTorch's collectives through the c10d shim, two Gloo ranks as threads.

use super::dist_ranks;
use facekit_train::dist::ReduceOp;
use tch::{Kind, Tensor};

fn v(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn all_reduce_broadcast_gather_scatter_and_barrier_combine_the_ranks_tensors() {
    let out = dist_ranks::run(2, |g| {
        let r = g.rank() as f32;
        let sum = Tensor::from_slice(&[1.0 + r, 10.0 * r]);
        let avg = sum.copy();
        let max = sum.copy();
        g.all_reduce(&[&sum], ReduceOp::Sum).unwrap();
        g.all_reduce(&[&avg], ReduceOp::Avg).unwrap();
        g.all_reduce(&[&max], ReduceOp::Max).unwrap();
        let a = Tensor::from_slice(&[r; 3]);
        let b = Tensor::from_slice(&[2.0 * r; 5]);
        g.all_reduce_coalesced(&[&a, &b], ReduceOp::Sum).unwrap();
        let w = Tensor::from_slice(&[r + 5.0, r + 6.0]).reshape([1, 2]);
        g.broadcast(&[&w], 0).unwrap();
        let gathered = g.all_gather(&Tensor::from_slice(&[r, r + 0.5]).reshape([1, 2])).unwrap();
        let scattered = g
            .reduce_scatter(&Tensor::from_slice(&[1.0 + r, 2.0 + r, 3.0 + r, 4.0 + r]).reshape([2, 2]), ReduceOp::Sum)
            .unwrap();
        g.barrier().unwrap();
        [v(&sum), v(&avg), v(&max), v(&a), v(&b), v(&w), v(&gathered), v(&scattered)]
    });
    for (rank, o) in out.iter().enumerate() {
        assert_eq!(o[0], vec![3.0, 10.0], "sum");
        assert_eq!(o[1], vec![1.5, 5.0], "avg");
        assert_eq!(o[2], vec![2.0, 10.0], "max");
        assert_eq!((o[3].clone(), o[4].clone()), (vec![1.0; 3], vec![2.0; 5]), "coalesced");
        assert_eq!(o[5], vec![5.0, 6.0], "broadcast from rank 0");
        assert_eq!(o[6], vec![0.0, 0.5, 1.0, 1.5], "gathered in rank order");
        let expect = if rank == 0 { vec![3.0, 5.0] } else { vec![7.0, 9.0] };
        assert_eq!(o[7], expect, "rank {rank}'s rows of the sum");
    }
}

#[test]
fn the_autograd_all_gather_sums_the_gradient_back_to_each_ranks_rows() {
    let out = dist_ranks::run(2, |g| {
        let r = g.rank() as f64;
        let x = Tensor::from_slice(&[1.0 + r, 2.0 + r]).reshape([1, 2]).set_requires_grad(true);
        let all = g.all_gather_autograd(&x, 3.0).unwrap();
        // Each rank weights the gathered rows differently: rank r's loss is (r+1) * sum(rows * k).
        let k = Tensor::from_slice(&[1.0, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let loss = (&all * &k).sum(Kind::Double) * (r + 1.0);
        loss.backward();
        (Vec::<f64>::try_from(all.flatten(0, -1)).unwrap(), Vec::<f64>::try_from(x.grad().flatten(0, -1)).unwrap())
    });
    assert_eq!(out[0].0, vec![1.0, 2.0, 2.0, 3.0]);
    // d/dx_r of sum over ranks q of (q+1) * k[r] = 3 * k[r], times the grad scale 3.
    assert_eq!(out[0].1, vec![9.0, 18.0]);
    assert_eq!(out[1].1, vec![27.0, 36.0]);
}

#[test]
fn a_solo_group_is_the_identity_and_its_sharded_cross_entropy_is_cross_entropy() {
    let g = facekit_train::dist::ProcessGroup::solo(dist_ranks::TIMEOUT).unwrap();
    let x = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0]).reshape([2, 3]);
    assert_eq!(v(&g.all_gather(&x).unwrap()), v(&x));
    let logits = x.set_requires_grad(true);
    let labels = Tensor::from_slice(&[2i64, 0]);
    let loss = g.sharded_cross_entropy(&logits, &labels).unwrap();
    loss.backward();
    let reference_logits = x.detach().set_requires_grad(true);
    let reference = reference_logits.cross_entropy_for_logits(&labels);
    reference.backward();
    assert!((loss.double_value(&[]) - reference.double_value(&[])).abs() < 1e-6);
    let d = (logits.grad() - reference_logits.grad()).abs().max().double_value(&[]);
    assert!(d < 1e-6, "gradient differs by {d}");
    let clone = g.try_clone().unwrap();
    drop(g);
    assert_eq!(clone.size(), 1);
    clone.barrier().unwrap();
}
