use anyhow::Result;
use clap::Args;
#[derive(Args)]
pub struct TrainArgs {}
pub fn run(_a: TrainArgs) -> Result<()> { anyhow::bail!("todo") }
