//! The model `forge train` fits, kept deliberately tiny so the workload is I/O-bound: features
//! are 256 bytes sampled at regular intervals from an image's raw JPEG bytes (the JPEG is not
//! decoded), scaled to [-1, 1); the classifier is linear (256 → classes), with softmax,
//! cross-entropy loss and plain SGD on the batch's mean gradient. Weights start at zero, so the
//! first loss is exactly ln(classes), and every computation is sequential and single-threaded,
//! so the same batches give the same losses bit for bit.

/// Features per image.
pub const FEATURES: usize = 256;

/// An image's features.
pub type Features = [f32; FEATURES];

/// Samples `FEATURES` bytes at regular intervals across `image` and scales them to [-1, 1).
pub fn features(image: &[u8]) -> Features {
    let mut f = [0.0; FEATURES];
    if image.is_empty() {
        return f;
    }
    for (i, v) in f.iter_mut().enumerate() {
        *v = f32::from(image[i * image.len() / FEATURES]) / 128.0 - 1.0;
    }
    f
}

/// A linear classifier.
#[derive(Debug, Clone)]
pub struct Linear {
    classes: usize,
    /// Row-major, `classes` rows of `FEATURES` weights.
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    pub fn new(classes: usize) -> Linear {
        Linear {
            classes,
            weights: vec![0.0; classes * FEATURES],
            bias: vec![0.0; classes],
        }
    }

    /// Class probabilities for one image.
    fn probabilities(&self, x: &Features, out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate() {
            let row = &self.weights[c * FEATURES..(c + 1) * FEATURES];
            *o = self.bias[c] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>();
        }
        let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }

    /// One SGD step on a batch; returns the batch's mean cross-entropy before the update.
    pub fn step(&mut self, xs: &[Features], ys: &[u32], lr: f32) -> f32 {
        assert_eq!(xs.len(), ys.len(), "one label per image");
        if xs.is_empty() {
            return 0.0;
        }
        let mut grad_w = vec![0.0f32; self.weights.len()];
        let mut grad_b = vec![0.0f32; self.classes];
        let mut p = vec![0.0f32; self.classes];
        let mut loss = 0.0f64;
        for (x, &y) in xs.iter().zip(ys) {
            self.probabilities(x, &mut p);
            loss -= f64::from(p[y as usize].max(1e-12).ln());
            for c in 0..self.classes {
                let g = p[c] - if c == y as usize { 1.0 } else { 0.0 };
                grad_b[c] += g;
                for (gw, v) in grad_w[c * FEATURES..(c + 1) * FEATURES].iter_mut().zip(x) {
                    *gw += g * v;
                }
            }
        }
        let scale = lr / xs.len() as f32;
        for (w, g) in self.weights.iter_mut().zip(&grad_w) {
            *w -= scale * g;
        }
        for (b, g) in self.bias.iter_mut().zip(&grad_b) {
            *b -= scale * g;
        }
        (loss / xs.len() as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_sample_evenly_and_scale() {
        let image: Vec<u8> = (0..512u32).map(|i| (i / 2) as u8).collect();
        let f = features(&image);
        // Every second byte of a 512-byte image: byte i*2 holds i.
        for (i, v) in f.iter().enumerate() {
            assert_eq!(*v, i as f32 / 128.0 - 1.0);
        }
        assert_eq!(features(&[]), [0.0; FEATURES]);
        let short = features(&[0, 255]);
        assert_eq!((short[0], short[255]), (-1.0, 255.0 / 128.0 - 1.0));
    }

    #[test]
    fn the_first_loss_is_ln_classes_and_learning_lowers_it() {
        let mut m = Linear::new(10);
        // Two separable classes: feature 0 is +1 for class 3, -1 for class 7.
        let xs: Vec<Features> = (0..32)
            .map(|i| {
                let mut f = [0.0; FEATURES];
                f[0] = if i % 2 == 0 { 1.0 } else { -1.0 };
                f
            })
            .collect();
        let ys: Vec<u32> = (0..32).map(|i| if i % 2 == 0 { 3 } else { 7 }).collect();
        let first = m.step(&xs, &ys, 0.5);
        assert!((first - 10f32.ln()).abs() < 1e-5, "{first}");
        let mut last = first;
        for _ in 0..200 {
            last = m.step(&xs, &ys, 0.5);
        }
        assert!(last < 0.1, "loss {last} after 200 steps on separable data");
    }
}
