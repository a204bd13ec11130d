//! 2-D point transforms: affine maps and the least-squares similarity fit (Umeyama).

/// A 2-D point in image pixels; (0, 0) is the centre of the top-left pixel, as in dlib.
pub type Point2 = [f64; 2];

/// An affine map `p -> m * p + b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Row-major 2x2 linear part.
    pub m: [[f64; 2]; 2],
    /// Translation.
    pub b: [f64; 2],
}

impl Affine {
    /// Applies the map to a point (same operation order as dlib's `point_transform_affine`).
    #[inline]
    pub fn apply(&self, p: Point2) -> Point2 {
        [self.m[0][0] * p[0] + self.m[0][1] * p[1] + self.b[0], self.m[1][0] * p[0] + self.m[1][1] * p[1] + self.b[1]]
    }

    /// The inverse map, or `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let [[a, b], [c, d]] = self.m;
        let det = a * d - b * c;
        if det == 0.0 || !det.is_finite() {
            return None;
        }
        let im = [[d / det, -b / det], [-c / det, a / det]];
        let ib = [-(im[0][0] * self.b[0] + im[0][1] * self.b[1]), -(im[1][0] * self.b[0] + im[1][1] * self.b[1])];
        Some(Affine { m: im, b: ib })
    }

    /// The affine map sending `from[i]` to `to[i]` for three non-collinear points
    /// (what dlib's `find_affine_transform` returns for exactly three points).
    pub(crate) fn from_three_points(from: [Point2; 3], to: [Point2; 3]) -> Option<Affine> {
        // Solve [x y 1] * X = to for the 3x3 system by Cramer's rule.
        let det3 = |m: [[f64; 3]; 3]| {
            m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
        };
        let p = [[from[0][0], from[0][1], 1.0], [from[1][0], from[1][1], 1.0], [from[2][0], from[2][1], 1.0]];
        let d = det3(p);
        if d == 0.0 || !d.is_finite() {
            return None;
        }
        let mut rows = [[0.0; 3]; 2];
        for (k, row) in rows.iter_mut().enumerate() {
            for (j, coef) in row.iter_mut().enumerate() {
                let mut q = p;
                for i in 0..3 {
                    q[i][j] = to[i][k];
                }
                *coef = det3(q) / d;
            }
        }
        Some(Affine { m: [[rows[0][0], rows[0][1]], [rows[1][0], rows[1][1]]], b: [rows[0][2], rows[1][2]] })
    }
}

/// A similarity transform (uniform scale, rotation, translation): `p -> scale * R(angle) * p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Uniform scale factor.
    pub scale: f64,
    /// Rotation in radians (counter-clockwise in x-right, y-up terms; clockwise on screen).
    pub angle: f64,
    /// Translation.
    pub t: [f64; 2],
}

impl Similarity {
    /// Least-squares similarity mapping `from` onto `to` (Umeyama 1991, eqs. 34-43), the same
    /// fit as dlib's `find_similarity_transform`.
    ///
    /// In 2-D the SVD of Umeyama's covariance has a closed form: the optimal rotation is
    /// `atan2(c10 - c01, c00 + c11)` and `trace(D S)` is the norm of that vector, which equals
    /// dlib's `d0 + d1` (or `d0 - d1` when the covariance has a negative determinant).
    pub fn fit(from: &[Point2], to: &[Point2]) -> Similarity {
        assert_eq!(from.len(), to.len(), "similarity fit needs paired points");
        assert!(from.len() >= 2, "similarity fit needs at least two points");
        let n = from.len() as f64;
        let mean = |pts: &[Point2]| {
            let s = pts.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            [s[0] / n, s[1] / n]
        };
        let (mf, mt) = (mean(from), mean(to));
        let mut sigma_from = 0.0;
        let mut cov = [[0.0f64; 2]; 2];
        for (f, t) in from.iter().zip(to) {
            let df = [f[0] - mf[0], f[1] - mf[1]];
            let dt = [t[0] - mt[0], t[1] - mt[1]];
            sigma_from += df[0] * df[0] + df[1] * df[1];
            for i in 0..2 {
                for j in 0..2 {
                    cov[i][j] += dt[i] * df[j];
                }
            }
        }
        sigma_from /= n;
        for row in cov.iter_mut() {
            for v in row.iter_mut() {
                *v /= n;
            }
        }
        let (a, b) = (cov[0][0] + cov[1][1], cov[1][0] - cov[0][1]);
        let angle = b.atan2(a);
        let scale = if sigma_from != 0.0 { a.hypot(b) / sigma_from } else { 1.0 };
        let (s, c) = angle.sin_cos();
        let t = [mt[0] - scale * (c * mf[0] - s * mf[1]), mt[1] - scale * (s * mf[0] + c * mf[1])];
        Similarity { scale, angle, t }
    }

    /// The transform as a general affine map.
    pub fn to_affine(&self) -> Affine {
        let (s, c) = self.angle.sin_cos();
        Affine { m: [[self.scale * c, -self.scale * s], [self.scale * s, self.scale * c]], b: self.t }
    }

    /// Applies the transform to a point.
    pub fn apply(&self, p: Point2) -> Point2 {
        self.to_affine().apply(p)
    }
}

/// Rotates `p` about `center` by `angle` radians (dlib's `rotate_point`).
#[inline]
pub(crate) fn rotate_point(center: Point2, p: Point2, angle: f64) -> Point2 {
    let (s, c) = (angle.sin(), angle.cos());
    let (x, y) = (p[0] - center[0], p[1] - center[1]);
    [c * x - s * y + center[0], s * x + c * y + center[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_fit_recovers_a_known_transform_exactly() {
        let truth = Similarity { scale: 1.7, angle: 0.3, t: [12.0, -4.5] };
        let from = [[0.0, 0.0], [10.0, 2.0], [3.0, 8.0], [-5.0, 1.0], [7.0, -6.0]];
        let to: Vec<Point2> = from.iter().map(|&p| truth.apply(p)).collect();
        let fit = Similarity::fit(&from, &to);
        assert!((fit.scale - 1.7).abs() < 1e-12 && (fit.angle - 0.3).abs() < 1e-12, "{fit:?}");
        assert!((fit.t[0] - 12.0).abs() < 1e-9 && (fit.t[1] + 4.5).abs() < 1e-9, "{fit:?}");
    }

    #[test]
    fn similarity_fit_of_mirrored_points_is_still_a_rotation() {
        // A mirror image cannot be matched by a similarity: Umeyama picks the best rotation
        // with scale trace(DS)/sigma = (d0 - d1)/sigma, here 0 for a pure reflection of a
        // symmetric square.
        let from = [[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]];
        let to: Vec<Point2> = from.iter().map(|p| [-p[0], p[1]]).collect();
        let fit = Similarity::fit(&from, &to);
        assert!(fit.scale.abs() < 1e-12, "{fit:?}");
    }

    #[test]
    fn affine_from_three_points_maps_them_and_inverts() {
        let from = [[0.0, 0.0], [223.0, 0.0], [0.0, 223.0]];
        let to = [[10.0, 20.0], [200.0, 40.0], [-10.0, 230.0]];
        let a = Affine::from_three_points(from, to).unwrap();
        for i in 0..3 {
            let p = a.apply(from[i]);
            assert!((p[0] - to[i][0]).abs() < 1e-9 && (p[1] - to[i][1]).abs() < 1e-9);
            let back = a.inverse().unwrap().apply(p);
            assert!((back[0] - from[i][0]).abs() < 1e-9 && (back[1] - from[i][1]).abs() < 1e-9);
        }
    }
}
