use anyhow::Result;
use clap::Args;
#[derive(Args)]
pub struct EvalArgs {}
pub fn run(_a: EvalArgs) -> Result<()> { anyhow::bail!("todo") }
