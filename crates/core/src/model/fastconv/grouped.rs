//! Grouped convolutions (ResNeXt, RegNet) where no gradient flows: every (image, band
//! of output rows, group) is one small product on that group's slice of the input
//! channels, written in place into the output with the fused epilogue. One packed conv
//! per group, each with its own input copy and output tensor joined at the end, cost
//! far more than the products at RegNet's 8 channels per group (9 GFLOP/s on
//! RegNetY-400MF's last stage). Where a gradient flows, `layers::Conv` keeps the
//! per-group convs, whose backward is the dense one's.

use std::sync::Arc;

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{checked_output, epilogue_op, filled, forward_bands, Act, Packed};

/// act(grouped conv(x) + bias + residual): `packed` holds the (c_out, c_in / groups,
/// kh, kw) weights, its geometry one group's input channels and all output channels.
pub struct GroupedConvOp {
    pub packed: Arc<Packed>,
    pub groups: usize,
    pub act: Act,
}

impl GroupedConvOp {
    fn forward(
        &self,
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (p, groups) = (&self.packed, self.groups);
        let (oh, ow) = checked_output(&p.geo, groups, (n, c, h, w), residual)?;
        let y = filled(n * p.geo.c_out * oh * ow, |dst| {
            forward_bands(p, (self.act, groups, None), x, (n, c, h, w), residual, dst)
        });
        Ok((CpuStorage::F32(y), Shape::from((n, p.geo.c_out, oh, ow))))
    }

    fn input_grad(&self, _: &Tensor, _: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("grouped conv: runs only where no gradient flows")
    }
}

epilogue_op!(GroupedConvOp, "camstream-grouped-conv", |l: &Layout| l
    .shape()
    .dims4());
