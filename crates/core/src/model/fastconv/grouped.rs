//! Grouped convolutions (ResNeXt, RegNet) where no gradient flows: every (image, band
//! of output rows, group) is one small product on that group's slice of the input
//! channels, written in place into the output with the fused epilogue. One packed conv
//! per group, each with its own input copy and output tensor joined at the end, cost
//! far more than the products at RegNet's 8 channels per group (9 GFLOP/s on
//! RegNetY-400MF's last stage). Where a gradient flows, `layers::Conv` keeps the
//! per-group convs, whose backward is the dense one's.

use std::sync::Arc;

use candle_core::{CpuStorage, Layout, Shape, Tensor};

use super::{
    banded_jobs, count_flops, epilogue_op, filled, im2col, Act, BandedOutput, Packed, PackedView,
};

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
        let p = &self.packed;
        let g = &p.geo;
        if self.groups == 0 || c != g.c_in * self.groups || !g.c_out.is_multiple_of(self.groups) {
            candle_core::bail!(
                "grouped conv: {c} input and {} output channels in {} groups of {} inputs",
                g.c_out,
                self.groups,
                g.c_in
            );
        }
        let (oh, ow) = g.out(h, w);
        let len = n * g.c_out * oh * ow;
        if residual.is_some_and(|r| r.len() != len) {
            candle_core::bail!("grouped conv: the residual is not shaped like the output");
        }
        count_flops(len * g.k_size());
        let weights = PackedView {
            weight: &p.weight,
            bias: p.bias.as_deref(),
            c_out: g.c_out,
            groups: self.groups,
            ks: g.k_size(),
            pointwise: g.pointwise(),
            act: self.act,
        };
        let out = BandedOutput {
            n,
            in_len: c * h * w,
            rows: oh,
            ow,
        };
        let y = filled(len, |dst| {
            banded_jobs(
                &weights,
                &out,
                x,
                residual,
                dst,
                &|img, (r0, r), col, phases| im2col(g, img, (h, w), (r0, r, ow), col, phases),
            )
        });
        Ok((CpuStorage::F32(y), Shape::from((n, g.c_out, oh, ow))))
    }

    fn input_grad(&self, _: &Tensor, _: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("grouped conv: runs only where no gradient flows")
    }
}

epilogue_op!(GroupedConvOp, "camstream-grouped-conv", |l: &Layout| l
    .shape()
    .dims4());
