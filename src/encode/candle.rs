//! The reference engine: candle-transformers' `BertModel` on padded
//! batches, in f32. Slower, but written by others: the fast engine is
//! tested against it.

use candle_core::{Device, Tensor};
use candle_transformers::models::bert::BertModel;

use crate::error::Result;

use super::Backend;

pub(super) struct CandleBert {
    pub(super) model: BertModel,
    pub(super) hidden: usize,
    pub(super) pad_id: u32,
}

impl Backend for CandleBert {
    fn token_states(&self, batch: &[&[u32]]) -> Result<Vec<f32>> {
        let max_len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if max_len == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(batch.len() * max_len);
        let mut mask = Vec::with_capacity(batch.len() * max_len);
        for s in batch {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.pad_id, max_len - s.len()));
            mask.extend(std::iter::repeat_n(1u32, s.len()));
            mask.extend(std::iter::repeat_n(0u32, max_len - s.len()));
        }
        let shape = (batch.len(), max_len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let states = self
            .model
            .forward(&ids, &ids.zeros_like()?, Some(&mask))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // Keep the rows of real tokens only, packed as the fast engine gives them.
        let h = self.hidden;
        let mut packed = Vec::with_capacity(batch.iter().map(|s| s.len()).sum::<usize>() * h);
        for (b, s) in batch.iter().enumerate() {
            packed.extend_from_slice(&states[b * max_len * h..(b * max_len + s.len()) * h]);
        }
        Ok(packed)
    }

    fn max_batch_tokens(&self) -> usize {
        usize::MAX
    }

    fn product_kernel(&self) -> String {
        "candle".into()
    }
}
