//! A network as a flat list of named units, cut between two of them.

use candle_core::Tensor;

use super::fastconv::Act;
use super::layers::{self, Op};
use super::{Body, Tail};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct Unit {
    pub name: String,
    pub op: Op,
    /// Set when this unit's op was folded into a neighbour (conv + BN): its own output no
    /// longer exists, so it cannot be a target.
    pub fused_into: Option<String>,
}

impl Unit {
    pub fn new(name: impl Into<String>, op: Op) -> Self {
        Self {
            name: name.into(),
            op,
            fused_into: None,
        }
    }

    /// Several ops as one target-able unit, optionally with an identity shortcut.
    pub fn chain(name: impl Into<String>, ops: Vec<Op>, residual: bool) -> Self {
        Self::new(name, Op::Chain(Box::new(layers::Chain { ops, residual })))
    }
}

/// Units run in order; a layer name means the output of one of them.
#[derive(Clone, Debug)]
pub struct UnitNet {
    units: Vec<Unit>,
}

impl UnitNet {
    pub fn new(units: Vec<Unit>) -> Self {
        Self { units }
    }

    /// Index of the first unit that no longer has spatial dims (pooling or flatten).
    fn spatial_end(&self) -> usize {
        self.units
            .iter()
            .position(|u| matches!(u.op, Op::GlobalAvgPool | Op::Flatten | Op::Linear(_)))
            .unwrap_or(self.units.len())
    }

    /// The unit whose output a layer name means.
    fn resolve(&self, name: &str) -> Result<usize> {
        let end = self.spatial_end();
        let found = self.units.iter().position(|u| u.name == name).or_else(|| {
            let prefix = format!("{name}.");
            self.units.iter().rposition(|u| u.name.starts_with(&prefix))
        });
        let Some(idx) = found else {
            return Err(Error::UnknownLayer {
                name: name.to_string(),
                valid: self.target_names(),
            });
        };
        if idx >= end {
            return Err(Error::BadTarget {
                name: name.to_string(),
                why: "its output has no spatial dimensions (it comes after global pooling)".into(),
            });
        }
        if let Some(into) = &self.units[idx].fused_into {
            return Err(Error::BadTarget {
                name: name.to_string(),
                why: format!("it was folded into `{into}` at load; target `{into}`"),
            });
        }
        Ok(idx)
    }

    /// Runs units `from..to` (exclusive end). Only the last unit's output is kept, so a
    /// conv and the ReLU after it (past folded BN units) run as one op.
    fn run(&self, x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        let mut x = x.clone();
        let mut i = from;
        while i < to {
            if let Some(conv) = self.units[i].op.fused_conv() {
                let next = (i + 1..to).find(|&j| !matches!(self.units[j].op, Op::Identity));
                let act = next.and_then(|j| match self.units[j].op {
                    Op::Relu => Some((j, Act::Relu)),
                    Op::Relu6 => Some((j, Act::Relu6)),
                    _ => None,
                });
                if let Some((j, act)) = act {
                    x = conv.forward_with(&x, act, None)?;
                    i = j + 1;
                    continue;
                }
            }
            x = self.units[i].op.forward(&x)?;
            i += 1;
        }
        Ok(x)
    }
}

impl Body for UnitNet {
    fn target_names(&self) -> Vec<String> {
        let end = self.spatial_end();
        let mut names: Vec<String> = Vec::new();
        for (i, u) in self.units[..end].iter().enumerate() {
            if u.fused_into.is_none() {
                names.push(u.name.clone());
            }
            // A dotted name's parent (`features.6` for `features.6.relu`, `layer4` for
            // `layer4.1`) names the whole block's output, as a PyTorch module hook would.
            if let Some((parent, _)) = u.name.rsplit_once('.') {
                let next_same = self.units[..end]
                    .get(i + 1)
                    .is_some_and(|n| n.name.starts_with(&format!("{parent}.")));
                if !next_same && !names.iter().any(|n| n == parent) {
                    names.push(parent.to_string());
                }
            }
        }
        names
    }

    fn check_target(&self, layer: &str) -> Result<()> {
        self.resolve(layer).map(|_| ())
    }

    fn layer_shapes(&self, input: &Tensor) -> Result<Vec<(String, Vec<usize>)>> {
        let mut x = input.clone();
        let mut shapes = Vec::with_capacity(self.units.len());
        for u in &self.units {
            x = u.op.forward(&x)?;
            shapes.push(x.dims()[1..].to_vec());
        }
        self.target_names()
            .into_iter()
            .map(|n| {
                let i = self.resolve(&n)?;
                Ok((n, shapes[i].clone()))
            })
            .collect()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, 0, self.units.len())
    }

    fn split<'s>(&'s self, x: &Tensor, layer: &str) -> Result<(Tensor, Tail<'s>)> {
        let cut = self.resolve(layer)? + 1;
        let a = self.run(x, 0, cut)?;
        let tail: Tail<'s> = Box::new(move |leaf: &Tensor| self.run(leaf, cut, self.units.len()));
        Ok((a, tail))
    }

    fn affine_stem(&self) -> Option<String> {
        let end = self.spatial_end();
        self.units[..end]
            .iter()
            .take_while(|u| {
                matches!(
                    u.op,
                    Op::Conv(_) | Op::Conv3d(_) | Op::Affine(_) | Op::Identity
                )
            })
            .filter(|u| u.fused_into.is_none())
            .last()
            .map(|u| u.name.clone())
    }
}
