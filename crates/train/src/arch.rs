//! The sample models' architecture: Conv-BN-ReLU blocks with optional max-pooling,
//! global average pooling and a linear head, described once for the trainer and for
//! the `sequential` TOML that the inference path loads.

use std::fmt::Write as _;

use camstream_core::model::layers::Dims;

#[derive(Clone, Debug)]
pub struct BlockSpec {
    pub out: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Max-pool 2/2 after the block.
    pub pool: bool,
}

#[derive(Clone, Debug)]
pub struct ArchSpec {
    pub dims: Dims,
    pub in_channels: usize,
    pub blocks: Vec<BlockSpec>,
    /// The block whose output is the default Grad-CAM layer; None: the last.
    pub target: Option<usize>,
    pub num_classes: usize,
}

impl ArchSpec {
    /// PyTorch-style names: block i is `features.{2i}`, its pool `features.{2i+1}`.
    pub(crate) fn block_names(&self) -> Vec<(String, Option<String>)> {
        let mut j = 0;
        self.blocks
            .iter()
            .map(|b| {
                let conv = format!("features.{j}");
                j += 1;
                let pool = b.pool.then(|| {
                    let p = format!("features.{j}");
                    j += 1;
                    p
                });
                (conv, pool)
            })
            .collect()
    }

    /// The default Grad-CAM layer: the output of block `target`, else of the last block.
    pub fn target_layer(&self) -> String {
        let names = self.block_names();
        let i = self.target.unwrap_or(names.len().saturating_sub(1));
        names.get(i).map(|(c, _)| c.clone()).unwrap_or_default()
    }

    /// The `[[layer]]` entries of the sequential config.
    pub fn layers_toml(&self) -> String {
        let d = self.dims.rank();
        let mut s = String::new();
        for (b, (name, pool)) in self.blocks.iter().zip(self.block_names()) {
            let _ = write!(
                s,
                "[[layer]]\nname = \"{name}.conv\"\nop = \"conv{d}d\"\nstride = {}\npadding = {}\nbias = false\n\
                 [[layer]]\nname = \"{name}.bn\"\nop = \"batchnorm{d}d\"\n\
                 [[layer]]\nname = \"{name}.relu\"\nop = \"relu\"\n",
                b.stride,
                b.kernel / 2
            );
            if let Some(p) = pool {
                let _ = write!(
                    s,
                    "[[layer]]\nname = \"{p}\"\nop = \"maxpool{d}d\"\nkernel = 2\n"
                );
            }
        }
        s.push_str("[[layer]]\nname = \"pool\"\nop = \"global_avgpool\"\n[[layer]]\nname = \"fc\"\nop = \"linear\"\n");
        s
    }
}
