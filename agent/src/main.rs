//! edge-agent: placeholder until the agent issues land.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("edge-agent is not implemented yet")
}
