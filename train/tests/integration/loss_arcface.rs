//! ArcFace logits and loss against the angle math done by hand in f64, including rows where
//! θ + m > π, where insightface's fallback cos θ − m·sin m applies.

use facekit_train::loss::ArcFace;
use tch::nn;
use tch::{Device, Kind, Tensor};

const S: f64 = 64.0;
const M: f64 = 0.5;

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Centres and embeddings chosen so that the rows cover θ small, θ ≈ π/2 and θ + m > π.
fn fixture() -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<i64>) {
    let centres = vec![
        vec![1.0, 0.0, 0.0, 0.0],
        vec![0.0, 2.0, 0.0, 0.0],
        vec![0.0, 0.0, 0.5, 0.5],
        vec![0.3, -0.2, 0.1, 0.9],
        vec![-1.0, 1.0, 1.0, -1.0],
    ];
    let embeddings = vec![
        vec![3.0, 0.2, 0.1, 0.0],      // close to centre 0
        vec![0.1, 0.0, 1.0, -1.0],     // about 90° from centre 1
        vec![0.0, 0.1, -2.0, -1.9],    // nearly opposite centre 2: θ + m > π
        vec![-0.3, 0.25, -0.1, -0.85], // nearly opposite centre 3
        vec![0.5, 0.5, 0.5, 0.5],      // unlabelled
    ];
    (centres, embeddings, vec![0, 1, 2, 3, -1])
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn arcface_with(centres: &[Vec<f64>]) -> (nn::VarStore, ArcFace) {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut a = ArcFace::new(&vs.root(), centres.len() as i64, centres[0].len() as i64, S, M);
    tch::no_grad(|| a.weight.copy_(&tensor(centres)));
    (vs, a)
}

/// The expected logit matrix, from θ = acos(cos) and the piecewise rule, in f64.
fn expected_logits(centres: &[Vec<f64>], emb: &[Vec<f64>], labels: &[i64]) -> Vec<Vec<f64>> {
    emb.iter()
        .zip(labels)
        .map(|(e, &y)| {
            centres
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let cos = dot(&unit(e), &unit(c));
                    if j as i64 != y {
                        return S * cos;
                    }
                    let theta = cos.acos();
                    if theta + M <= std::f64::consts::PI {
                        S * (theta + M).cos()
                    } else {
                        S * (cos - M * M.sin())
                    }
                })
                .collect()
        })
        .collect()
}

fn to_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double);
    (0..t.size()[0]).map(|i| Vec::<f64>::try_from(t.get(i)).unwrap()).collect()
}

#[test]
fn margin_logits_match_hand_computed_angles_including_theta_plus_m_beyond_pi() {
    let _turn = facekit_testkit::rng_turn();
    let (centres, emb, labels) = fixture();
    let past_pi = emb
        .iter()
        .zip(&labels)
        .filter(|(e, &y)| y >= 0 && dot(&unit(e), &unit(&centres[y as usize])).acos() + M > std::f64::consts::PI)
        .count();
    assert!(past_pi >= 2, "fixture must exercise the θ + m > π branch");
    let (_vs, a) = arcface_with(&centres);
    let got = to_rows(&a.logits(&tensor(&emb), &Tensor::from_slice(&labels)));
    let want = expected_logits(&centres, &emb, &labels);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        for (j, (x, y)) in g.iter().zip(w).enumerate() {
            assert!((x - y).abs() < 1e-3, "logit [{i}][{j}]: got {x}, want {y}");
        }
    }
}

#[test]
fn logits_without_margin_are_scaled_cosines() {
    let _turn = facekit_testkit::rng_turn();
    let (centres, emb, _) = fixture();
    let (_vs, a) = arcface_with(&centres);
    let got = to_rows(&a.logits_no_margin(&tensor(&emb)));
    let none = vec![-1i64; emb.len()];
    let want = expected_logits(&centres, &emb, &none);
    for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((g - w).abs() < 1e-3, "got {g}, want {w}");
    }
}

#[test]
fn loss_is_cross_entropy_over_labelled_rows_only() {
    let _turn = facekit_testkit::rng_turn();
    let (centres, emb, labels) = fixture();
    let (_vs, a) = arcface_with(&centres);
    let (loss, count) = a.loss(&tensor(&emb), &Tensor::from_slice(&labels));
    let want_rows: Vec<f64> = expected_logits(&centres, &emb, &labels)
        .iter()
        .zip(&labels)
        .filter(|(_, &y)| y >= 0)
        .map(|(row, &y)| {
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[y as usize]
        })
        .collect();
    let want = want_rows.iter().sum::<f64>() / want_rows.len() as f64;
    assert_eq!(count.int64_value(&[]), 4);
    let got = loss.double_value(&[]);
    assert!((got - want).abs() < 1e-3 * want.abs().max(1.0), "got {got}, want {want}");
}

#[test]
fn logits_stay_fp32_for_half_precision_embeddings() {
    let _turn = facekit_testkit::rng_turn();
    let (centres, emb, labels) = fixture();
    let (_vs, a) = arcface_with(&centres);
    let logits = a.logits(&tensor(&emb).to_kind(Kind::Half), &Tensor::from_slice(&labels));
    assert_eq!(logits.kind(), Kind::Float);
}

#[test]
fn gradient_is_finite_when_an_embedding_sits_on_its_centre() {
    let _turn = facekit_testkit::rng_turn();
    let centres = vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]];
    let (_vs, a) = arcface_with(&centres);
    let emb = tensor(&[vec![2.0, 0.0, 0.0]]).set_requires_grad(true);
    let (loss, _) = a.loss(&emb, &Tensor::from_slice(&[0i64]));
    loss.backward();
    let g = emb.grad();
    assert_eq!(g.isfinite().all().int64_value(&[]), 1, "{g}");
}
