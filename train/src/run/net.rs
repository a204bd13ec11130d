//! A network rebuilt from its files: the configuration in `net.json` (written by the trainer and
//! by `export`) and a weights file, as [`super::paths::locate`] finds them.

use crate::model::health::weights_problem;
use crate::model::{FaceNet, NetConfig};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

/// A network and its parameters, as its files describe it.
pub struct Network {
    /// Parameters (on the device it was loaded onto).
    pub vs: VarStore,
    /// The network.
    pub net: FaceNet,
    /// Its configuration (`net.json`).
    pub config: NetConfig,
}

/// The network configuration in `net_json`.
pub(crate) fn read_config(net_json: &Path) -> Result<NetConfig> {
    let text = facekit_io::bounded::read_string(net_json, facekit_io::bounded::STATE)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a network configuration", net_json.display()))
}

/// The network `net_json` describes, on `device`, with the weights of `weights`; refused when a
/// weight it embeds with cannot give finite embeddings ([`weights_problem`]).
pub fn load(weights: &Path, net_json: &Path, device: Device) -> Result<Network> {
    let config = read_config(net_json)?;
    let mut vs = VarStore::new(device);
    let net = FaceNet::new(&vs.root(), &config)
        .with_context(|| format!("bad network configuration in {}", net_json.display()))?;
    vs.load(weights).with_context(|| {
        format!("cannot load weights {} for the network of {}", weights.display(), net_json.display())
    })?;
    if let Some(problem) = weights_problem(&vs) {
        bail!(
            "weights {}: {problem}, so no embedding it computes can be finite (did its training diverge?)",
            weights.display()
        );
    }
    Ok(Network { vs, net, config })
}
