//! Where this process stands in a distributed run, read from the variables torchrun (and
//! `facekit train --nproc-per-node`) give each rank.
//!
//! The parsing is a pure function over a lookup, so every malformed or inconsistent combination
//! is tested without touching the process environment (which tests running in parallel share).
//! A mistake here is otherwise seen only as a hang: a rank that believes it is rank 4 of 4 waits
//! forever for a peer that never comes, so every check names the variable and its value.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

/// This process's place in a distributed run, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `RANK`: 0..world_size.
    pub rank: usize,
    /// Number of ranks in the run, `WORLD_SIZE`.
    pub world_size: usize,
    /// Rank on this machine, `LOCAL_RANK`: which GPU this rank uses.
    pub local_rank: usize,
    /// Number of ranks on this machine, `LOCAL_WORLD_SIZE`.
    pub local_world_size: usize,
    /// This machine's index among the machines, `GROUP_RANK` (torchrun's node rank), if given.
    pub group_rank: Option<usize>,
    /// Host of the rendezvous store, `MASTER_ADDR`.
    pub master_addr: String,
    /// Port of the rendezvous store, `MASTER_PORT`.
    pub master_port: u16,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: the launcher hosts the store, every rank is a client.
    pub use_agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT`: how many times the launcher restarted the workers (0 if unset).
    pub restart_count: u32,
    /// `TORCHELASTIC_ERROR_FILE`: where torchrun reads this rank's failure for its summary.
    pub error_file: Option<PathBuf>,
}

/// What to tell someone who launched by hand with a variable missing.
const HINT: &str = "torchrun and `facekit train --nproc-per-node` set it; a hand-made launch must set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT";

impl DistEnv {
    /// The run described by this process's environment; None for a plain single-process run.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The run described by `lookup` (a variable's value, None when unset); None when
    /// `WORLD_SIZE` is unset, or is 1 with no `RANK`: a plain single-process run.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Option<DistEnv>> {
        let var = |name: &str| text(name, lookup(name));
        let Some(world) = var("WORLD_SIZE")? else { return Ok(None) };
        let world_size = number::<usize>("WORLD_SIZE", &world)?;
        let rank = var("RANK")?;
        if world_size == 1 && rank.is_none() {
            return Ok(None);
        }
        let required = |name: &str| {
            var(name)?.with_context(|| format!("WORLD_SIZE is set ({world_size}) but {name} is not ({HINT})"))
        };
        let env = DistEnv {
            rank: number("RANK", &required("RANK")?)?,
            world_size,
            local_rank: number("LOCAL_RANK", &required("LOCAL_RANK")?)?,
            local_world_size: number("LOCAL_WORLD_SIZE", &required("LOCAL_WORLD_SIZE")?)?,
            group_rank: var("GROUP_RANK")?.map(|v| number("GROUP_RANK", &v)).transpose()?,
            master_addr: address(&required("MASTER_ADDR")?)?,
            master_port: port(&required("MASTER_PORT")?)?,
            use_agent_store: var("TORCHELASTIC_USE_AGENT_STORE")?
                .map(|v| flag("TORCHELASTIC_USE_AGENT_STORE", &v))
                .transpose()?
                .unwrap_or(false),
            restart_count: var("TORCHELASTIC_RESTART_COUNT")?
                .map(|v| number("TORCHELASTIC_RESTART_COUNT", &v))
                .transpose()?
                .unwrap_or(0),
            error_file: lookup("TORCHELASTIC_ERROR_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
        };
        env.check()?;
        Ok(Some(env))
    }

    /// Local rank `rank` of `nproc` on this machine, the store hosted by a launcher on
    /// 127.0.0.1:`port`: what `facekit train --nproc-per-node` gives each of its ranks.
    pub fn local(rank: usize, nproc: usize, port: u16) -> DistEnv {
        DistEnv {
            rank,
            world_size: nproc,
            local_rank: rank,
            local_world_size: nproc,
            group_rank: Some(0),
            master_addr: "127.0.0.1".into(),
            master_port: port,
            use_agent_store: true,
            restart_count: 0,
            // The launcher's store carries failure messages; torchrun's error files serve its own summary.
            error_file: None,
        }
    }

    /// The variables that describe this rank to a child process: what [`DistEnv::from_lookup`]
    /// reads back into the same `DistEnv`.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.local_world_size.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
            // torch compares the value with str(True), so it must be spelled so.
            ("TORCHELASTIC_USE_AGENT_STORE", if self.use_agent_store { "True" } else { "False" }.to_string()),
            ("TORCHELASTIC_RESTART_COUNT", self.restart_count.to_string()),
        ];
        if let Some(g) = self.group_rank {
            vars.push(("GROUP_RANK", g.to_string()));
        }
        if let Some(f) = &self.error_file {
            vars.push(("TORCHELASTIC_ERROR_FILE", f.to_string_lossy().into_owned()));
        }
        vars
    }

    /// This rank's training device for `--device requested`: `cuda:LOCAL_RANK` for `auto` on a
    /// CUDA machine and for `cuda`; `cpu` stays; an explicit `cuda:N` only with one rank per node.
    pub fn device(&self, requested: &str) -> Result<String> {
        let local = self.local_rank;
        let cuda = || -> Result<String> {
            let n = tch::Cuda::device_count() as usize;
            if local >= n {
                anyhow::bail!("local rank {local} needs cuda:{local}, but this machine shows {n} CUDA device(s): start at most {n} ranks per node");
            }
            Ok(format!("cuda:{local}"))
        };
        match requested {
            "auto" if tch::Cuda::is_available() => cuda(),
            "auto" | "cpu" => Ok("cpu".into()),
            "cuda" => cuda(),
            d if self.local_world_size > 1 => {
                anyhow::bail!("--device {d} with {} ranks on this node: each rank trains on cuda:LOCAL_RANK; pass --device cuda or auto", self.local_world_size)
            }
            d => Ok(d.into()),
        }
    }

    /// Whether the store's host is this machine, so that Gloo can stay on the loopback interface.
    pub(crate) fn master_is_loopback(&self) -> bool {
        let host = self.master_addr.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The combinations that no launcher produces: each would hang the run instead of failing.
    fn check(&self) -> Result<()> {
        let DistEnv { rank, world_size, local_rank, local_world_size, .. } = *self;
        if world_size == 0 {
            bail!("WORLD_SIZE is 0: a run has at least one rank");
        }
        if rank >= world_size {
            bail!("RANK={rank} is not below WORLD_SIZE={world_size} (ranks are numbered from 0)");
        }
        if local_world_size == 0 || local_world_size > world_size {
            bail!("LOCAL_WORLD_SIZE={local_world_size} must be between 1 and WORLD_SIZE={world_size}");
        }
        if local_rank >= local_world_size {
            bail!("LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world_size} (local ranks are numbered from 0)");
        }
        if let Some(g) = self.group_rank {
            if g >= world_size {
                bail!("GROUP_RANK={g} is not below WORLD_SIZE={world_size}: there cannot be more machines than ranks");
            }
        }
        Ok(())
    }
}

/// The variable's value as text, None when unset; an error when it is not UTF-8.
fn text(name: &str, value: Option<OsString>) -> Result<Option<String>> {
    value.map(|v| v.into_string().map_err(|v| anyhow::anyhow!("{name}={v:?} is not UTF-8 text"))).transpose()
}

/// A decimal number, surrounding blanks allowed as Python's `int()` allows them.
fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| anyhow::anyhow!("{name}={value:?} is not a non-negative whole number in range"))
}

fn address(value: &str) -> Result<String> {
    let host = value.trim();
    if host.is_empty() {
        bail!("MASTER_ADDR is empty: it must name the host of the rendezvous store");
    }
    Ok(host.to_string())
}

fn port(value: &str) -> Result<u16> {
    let port: u16 = number("MASTER_PORT", value)?;
    if port == 0 {
        bail!("MASTER_PORT=0: the ranks need the store's actual port");
    }
    Ok(port)
}

/// torchrun writes `True` or `False`; the usual other spellings are accepted, anything else is
/// refused rather than read as false (which would make every rank host its own store).
fn flag(name: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => bail!("{name}={value:?} is neither True nor False"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let map: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        DistEnv::from_lookup(|name| map.get(name).cloned())
    }

    /// What torchrun gives local rank 1 of 2 on the second of two machines.
    fn torchrun() -> Vec<(&'static str, &'static str)> {
        vec![
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("GROUP_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
            ("TORCHELASTIC_ERROR_FILE", "/tmp/torchelastic_x/attempt_2/3/error.json"),
        ]
    }

    fn with(name: &str, value: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
        let mut vars: Vec<_> = torchrun().into_iter().filter(|(k, _)| *k != name).collect();
        if let Some(v) = value {
            vars.push((torchrun().iter().find(|(k, _)| *k == name).unwrap().0, v));
        }
        vars
    }

    fn error(vars: &[(&str, &str)]) -> String {
        format!("{:#}", parse(vars).expect_err("accepted"))
    }

    #[test]
    fn torchruns_variables_are_read_in_full() {
        let env = parse(&torchrun()).unwrap().unwrap();
        let expect = DistEnv {
            rank: 3,
            world_size: 4,
            local_rank: 1,
            local_world_size: 2,
            group_rank: Some(1),
            master_addr: "10.0.0.1".into(),
            master_port: 29500,
            use_agent_store: true,
            restart_count: 2,
            error_file: Some("/tmp/torchelastic_x/attempt_2/3/error.json".into()),
        };
        assert_eq!(env, expect);
        assert!(!env.master_is_loopback());
    }

    #[test]
    fn no_world_size_or_a_world_of_one_without_rank_is_a_single_process_run() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[("MASTER_ADDR", "x")]).unwrap(), None);
        assert_eq!(parse(&[("WORLD_SIZE", "1")]).unwrap(), None);
        assert!(
            parse(&[("WORLD_SIZE", "1"), ("RANK", "0")]).is_err(),
            "a world of one with RANK is a launch: the rest must be there"
        );
    }

    #[test]
    fn a_hand_made_launch_needs_no_torchelastic_variables() {
        let vars = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "0"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "1234"),
        ];
        let env = parse(&vars).unwrap().unwrap();
        assert!(!env.use_agent_store, "without torchrun rank 0 hosts the store");
        assert_eq!((env.restart_count, env.group_rank, env.error_file.clone()), (0, None, None));
        assert!(env.master_is_loopback());
    }

    #[test]
    fn a_missing_variable_is_named() {
        for name in ["RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
            let e = error(&with(name, None));
            assert!(e.contains(&format!("but {name} is not")), "{name}: {e}");
        }
        assert!(parse(&with("GROUP_RANK", None)).unwrap().unwrap().group_rank.is_none());
    }

    #[test]
    fn a_malformed_value_is_named_with_the_value() {
        let cases = [
            ("WORLD_SIZE", "four", "WORLD_SIZE=\"four\""),
            ("RANK", "-1", "RANK=\"-1\""),
            ("LOCAL_RANK", "1.0", "LOCAL_RANK=\"1.0\""),
            ("LOCAL_WORLD_SIZE", "", "LOCAL_WORLD_SIZE=\"\""),
            ("GROUP_RANK", "x", "GROUP_RANK=\"x\""),
            ("MASTER_PORT", "70000", "MASTER_PORT=\"70000\""),
            ("MASTER_PORT", "0", "MASTER_PORT=0"),
            ("MASTER_ADDR", "  ", "MASTER_ADDR is empty"),
            ("TORCHELASTIC_USE_AGENT_STORE", "maybe", "TORCHELASTIC_USE_AGENT_STORE=\"maybe\""),
            ("TORCHELASTIC_RESTART_COUNT", "once", "TORCHELASTIC_RESTART_COUNT=\"once\""),
        ];
        for (name, value, expect) in cases {
            let e = error(&with(name, Some(value)));
            assert!(e.contains(expect), "{name}={value:?}: {e}");
        }
    }

    #[test]
    fn blanks_around_numbers_are_accepted_as_python_accepts_them() {
        let env = parse(&with("RANK", Some(" 2\n"))).unwrap().unwrap();
        assert_eq!(env.rank, 2);
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("RANK", "4")], "RANK=4 is not below WORLD_SIZE=4"),
            (&[("LOCAL_RANK", "2")], "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"),
            (&[("LOCAL_WORLD_SIZE", "5")], "LOCAL_WORLD_SIZE=5 must be between 1 and WORLD_SIZE=4"),
            (&[("WORLD_SIZE", "0"), ("RANK", "0")], "WORLD_SIZE is 0"),
            (&[("GROUP_RANK", "4")], "GROUP_RANK=4 is not below WORLD_SIZE=4"),
        ];
        for (changes, expect) in cases {
            let mut vars = torchrun();
            vars.retain(|(k, _)| !changes.iter().any(|(c, _)| c == k));
            vars.extend_from_slice(changes);
            let e = error(&vars);
            assert!(e.contains(expect), "{changes:?}: {e}");
        }
    }

    #[test]
    fn agent_store_flag_spellings() {
        for (value, expect) in [("True", true), ("true", true), ("1", true), ("False", false), ("0", false)] {
            assert_eq!(
                parse(&with("TORCHELASTIC_USE_AGENT_STORE", Some(value))).unwrap().unwrap().use_agent_store,
                expect,
                "{value}"
            );
        }
    }

    #[test]
    fn a_value_that_is_not_utf8_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let e = DistEnv::from_lookup(|name| match name {
            "WORLD_SIZE" => Some(OsString::from_vec(vec![0xff, b'2'])),
            _ => None,
        })
        .expect_err("accepted");
        assert!(format!("{e:#}").contains("WORLD_SIZE=") && format!("{e:#}").contains("not UTF-8"), "{e:#}");
    }

    #[test]
    fn vars_read_back_into_the_same_env() {
        let env = parse(&torchrun()).unwrap().unwrap();
        let vars = env.vars();
        let owned: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(parse(&owned).unwrap().unwrap(), env);
        let single = DistEnv { group_rank: None, use_agent_store: false, error_file: None, ..env };
        let vars = single.vars();
        let owned: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(parse(&owned).unwrap().unwrap(), single);
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        let env = parse(&torchrun()).unwrap().unwrap();
        for (addr, expect) in [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("[::1]", true),
            ("LocalHost", true),
            ("10.0.0.1", false),
            ("node-0", false),
        ] {
            let e = DistEnv { master_addr: addr.into(), ..env.clone() };
            assert_eq!(e.master_is_loopback(), expect, "{addr}");
        }
    }
}
