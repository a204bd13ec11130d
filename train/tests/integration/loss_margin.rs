//! CosFace and the combined margin against logits computed by hand in f64 (θ = acos of the
//! cosine of the normalised vectors, then the formula), including rows past the combined
//! margin's θ* where the documented fallback applies; finite gradients where cos θ = ±1; and
//! the margin in `net.json` (absent in old files: ArcFace).

use facekit_train::loss::{ArcFace, FaceLoss, HeadConfig, Margin, MarginKind};
use facekit_train::model::{Arch, NetConfig};
use std::f64::consts::PI;
use tch::nn;
use tch::{Device, Kind, Tensor};

const S: f64 = 64.0;

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    unit(a).iter().zip(unit(b)).map(|(x, y)| x * y).sum()
}

/// Rows at θ near 0, near 90°, past 135° and near 180° from their centre, and one unlabelled.
fn fixture() -> (Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<i64>) {
    let centres = vec![vec![1.0, 0.0, 0.0], vec![0.0, 2.0, 0.0], vec![0.0, 0.0, 0.5], vec![0.3, -0.2, 0.9]];
    let embeddings = vec![
        vec![3.0, 0.2, 0.1],
        vec![0.1, 0.05, 1.0],
        vec![0.3, -0.2, -1.0],
        vec![-0.3, 0.25, -0.85],
        vec![0.5, 0.5, 0.5],
    ];
    (centres, embeddings, vec![0, 1, 2, 3, -1])
}

fn tensor(rows: &[Vec<f64>]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn head(centres: &[Vec<f64>], margin: Margin) -> (nn::VarStore, ArcFace) {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut a = ArcFace::with_margin(&vs.root(), centres.len() as i64, centres[0].len() as i64, S, margin);
    tch::no_grad(|| a.weight.copy_(&tensor(centres)));
    (vs, a)
}

/// The hand-computed target: s·(cos(m1·θ + m2) − m3) up to θ* = (π − m2)/m1, then
/// s·(cos θ − (1 + cos θ*) − m3); the other classes s·cos θ.
fn expected(centres: &[Vec<f64>], emb: &[Vec<f64>], labels: &[i64], (m1, m2, m3): (f64, f64, f64)) -> Vec<Vec<f64>> {
    emb.iter()
        .zip(labels)
        .map(|(e, &y)| {
            centres
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    let cos = cosine(e, c);
                    if j as i64 != y {
                        return S * cos;
                    }
                    let theta = cos.acos();
                    if m1 * theta + m2 <= PI {
                        S * ((m1 * theta + m2).cos() - m3)
                    } else {
                        let theta_star = (PI - m2) / m1;
                        S * (cos - (1.0 + theta_star.cos()) - m3)
                    }
                })
                .collect()
        })
        .collect()
}

fn check(margin: Margin, values: (f64, f64, f64)) {
    let (centres, emb, labels) = fixture();
    let (_vs, a) = head(&centres, margin);
    let got = a.logits(&tensor(&emb), &Tensor::from_slice(&labels)).to_kind(Kind::Double);
    let want = expected(&centres, &emb, &labels, values);
    for (i, row) in want.iter().enumerate() {
        for (j, w) in row.iter().enumerate() {
            let g = got.double_value(&[i as i64, j as i64]);
            assert!((g - w).abs() < 1e-3, "{:?} logit [{i}][{j}]: got {g}, want {w}", margin.kind());
        }
    }
}

#[test]
fn cosface_subtracts_m3_from_the_target_cosine() {
    let _turn = facekit_testkit::rng_turn();
    check(Margin::Cosface { m: 0.4 }, (1.0, 0.0, 0.4));
}

#[test]
fn combined_margin_matches_the_formula_on_both_sides_of_theta_star() {
    let _turn = facekit_testkit::rng_turn();
    let (m1, m2, m3) = (1.2, 0.3, 0.2);
    let (centres, emb, labels) = fixture();
    let beyond = emb
        .iter()
        .zip(&labels)
        .filter(|(e, &y)| y >= 0 && m1 * cosine(e, &centres[y as usize]).acos() + m2 > PI)
        .count();
    let within = labels.iter().filter(|&&y| y >= 0).count() - beyond;
    assert!(beyond >= 1 && within >= 2, "the fixture must cover both branches ({within} within, {beyond} beyond)");
    check(Margin::Combined { m1, m2, m3 }, (m1, m2, m3));
    // insightface's MXNet example values (m1 = 1: the fallback starts at θ = π − m2).
    check(Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.2 }, (1.0, 0.3, 0.2));
}

#[test]
fn combined_target_is_continuous_and_falling_at_theta_star() {
    let _turn = facekit_testkit::rng_turn();
    let m = Margin::Combined { m1: 1.5, m2: 0.4, m3: 0.1 };
    let (m1, m2, _) = m.values();
    let theta_star = (PI - m2) / m1;
    let thetas: Vec<f64> = (-3..=3).map(|i| theta_star + i as f64 * 1e-2).collect();
    let cos = Tensor::from_slice(&thetas.iter().map(|t| t.cos() as f32).collect::<Vec<_>>());
    let target = Vec::<f64>::try_from(m.target_cos(&cos).to_kind(Kind::Double)).unwrap();
    for w in target.windows(2) {
        assert!(w[1] < w[0], "the target must fall as θ grows: {target:?}");
        // Past θ* the target falls like cos θ, about sin θ* ≈ 0.97 per radian: 0.01 per step.
        assert!(w[0] - w[1] < 2e-2, "no jump at θ*: {target:?}");
    }
}

#[test]
fn gradients_stay_finite_where_the_embedding_is_on_or_opposite_its_centre() {
    let _turn = facekit_testkit::rng_turn();
    let centres = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    for margin in [Margin::Combined { m1: 1.2, m2: 0.3, m3: 0.2 }, Margin::Cosface { m: 0.4 }, Margin::arcface(0.5)] {
        let (_vs, a) = head(&centres, margin);
        let emb = tensor(&[vec![2.0, 0.0], vec![0.0, -3.0]]).set_requires_grad(true);
        let (loss, _) = a.loss(&emb, &Tensor::from_slice(&[0i64, 1]));
        loss.backward();
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
        assert!(
            finite(&loss) && finite(&emb.grad()) && finite(&a.weight.grad()),
            "{:?}: non-finite loss or gradient",
            margin.kind()
        );
    }
}

#[test]
fn arcface_kind_is_the_arcface_head_bit_for_bit() {
    let _turn = facekit_testkit::rng_turn();
    let (centres, emb, labels) = fixture();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut old = ArcFace::new(&vs.root(), 4, 3, S, 0.5);
    tch::no_grad(|| old.weight.copy_(&tensor(&centres)));
    let (_vs, new) = head(&centres, Margin::arcface(0.5));
    let x = tensor(&emb);
    let y = Tensor::from_slice(&labels);
    assert!(old.logits(&x, &y).equal(&new.logits(&x, &y)));
    // And that is what a default network configuration builds.
    let cfg = NetConfig { num_classes: 4, embedding_size: 3, ..NetConfig::default() };
    let vs = nn::VarStore::new(Device::Cpu);
    let loss = FaceLoss::new(&vs.root(), &cfg, &HeadConfig::default()).unwrap();
    assert_eq!(loss.arcface.unwrap().margin, Margin::arcface(0.5));
}

#[test]
fn net_json_holds_the_network_alone_and_old_files_with_a_margin_still_load() {
    // net.json of earlier versions also held the margin, the scale and the task weights: the
    // network's fields still load from it, the others live in config.json's head now.
    let old = r#"{"arch":"tiny","image_size":48,"embedding_size":8,"dropout":0.0,"task":"fr","num_classes":3,
                  "age_bins":101,"arcface_s":64.0,"arcface_m":0.35,"margin":"cosface","margin_m1":1.0,
                  "margin_m3":0.4,"weights":{"fr":1.0,"gender":1.0,"age":1.0},"zero_init_residual":false}"#;
    let cfg: NetConfig = serde_json::from_str(old).unwrap();
    assert_eq!(
        cfg,
        NetConfig { arch: Arch::Tiny, image_size: 48, embedding_size: 8, num_classes: 3, ..NetConfig::default() }
    );
    let written = serde_json::to_value(&cfg).unwrap();
    for loss_field in ["arcface_s", "arcface_m", "margin", "margin_m1", "margin_m3", "weights"] {
        assert!(written.get(loss_field).is_none(), "net.json no longer writes {loss_field}: {written}");
    }
}

#[test]
fn a_margin_holds_only_its_own_values() {
    // In config.json each kind has its own values: a cosine margin with an angle is refused by
    // name, not read as something else.
    let back: Margin = serde_json::from_str(r#"{"kind":"cosface","m":0.4}"#).unwrap();
    assert_eq!(back, Margin::Cosface { m: 0.4 });
    assert_eq!(back.values(), (1.0, 0.0, 0.4));
    let err = serde_json::from_str::<Margin>(r#"{"kind":"cosface","m":0.4,"m2":0.5}"#).unwrap_err().to_string();
    assert!(err.contains("m2"), "{err}");
    let err = Margin::from_values(MarginKind::Cosface, 1.0, 0.5, 0.4).unwrap_err().to_string();
    assert!(err.contains("cosface margin has m1 = 1 and m2 = 0"), "{err}");
    assert_eq!(Margin::from_values(MarginKind::Arcface, 1.0, 0.3, 0.0).unwrap(), Margin::arcface(0.3));
}
