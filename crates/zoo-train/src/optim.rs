//! AdamW (Loshchilov & Hutter 2019) with the usual exclusion of norms, biases, embeddings and
//! RWKV's mixing / decay / bonus vectors from weight decay, and global-norm gradient clipping
//! (torch.nn.utils.clip_grad_norm_ semantics: g ← g · min(1, c / ‖g‖₂) over all parameters;
//! Burn's own `GradientClipping::Norm` clips each tensor separately, which is not the same).

use burn::grad_clipping::GradientClipping;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::config::TrainConfig;

/// Substrings of parameter paths that get no weight decay.
pub const NO_DECAY: [&str; 7] = [
    "norm",
    "bias",
    "embed",
    "positions",
    "mix_",
    "decay_base",
    "bonus",
];

pub fn adamw(cfg: &TrainConfig) -> ModuleOptimizer {
    let base = AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.eps as f32)
        .with_weight_decay(cfg.weight_decay as f32);
    let optim = base.init();
    if cfg.decay_all {
        return optim;
    }
    let no_decay = base.clone().with_weight_decay(0.0).build();
    optim.with_group(
        ParamGroup::from_any_predicates(NO_DECAY.to_vec()),
        no_decay,
        None::<GradientClipping>,
    )
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Global L2 norm of the gradients.
pub fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm { grads, total: None };
    model.visit(&mut v);
    v.total
        .map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt())
}

/// Scale all gradients by `factor`.
pub fn scale_grads<M: Module>(model: &M, grads: &mut GradientsParams, factor: f32) {
    model.visit(&mut Scale { grads, factor });
}

/// Clip to global norm `max_norm` (0 = off); returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = grad_norm(model, grads);
    if max_norm > 0.0 && norm > max_norm {
        scale_grads(model, grads, (max_norm / (norm + 1e-6)) as f32);
    }
    norm
}
