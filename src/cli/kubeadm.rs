//! `p11ca kubeadm …`: kubeadm's configuration file in, the library's kube workflows out.

use std::path::Path;

use p11ca::Result;
use p11ca::kube::certs::{CertsPlan, TokenContext};
use p11ca::kube::config::KubeadmConfig;
use p11ca::kube::csrs::SignCsrsPlan;
use p11ca::kube::kubeconfig::KubeconfigPlan;

use super::args::{KubeadmCommand, TokenArgs};
use super::{Opened, open_and_login, read_input, warn, write_stdout};

pub(super) fn run(cmd: KubeadmCommand, before: &TokenArgs) -> Result<()> {
    match cmd {
        KubeadmCommand::Certs {
            config,
            cert_dir,
            dry_run,
            token,
        } => certs(&config, &cert_dir, dry_run, &token.over(before)?),
        KubeadmCommand::Kubeconfig {
            config,
            cert_dir,
            kubeconfig_dir,
            client_name,
            org,
            token,
        } => {
            let cfg = read_config(&config)?;
            let plan = KubeconfigPlan::new(&cfg, &cert_dir, &kubeconfig_dir)?;
            let o = open_and_login(&token.over(before)?, None)?;
            let t = context(&o);
            match client_name {
                Some(name) => write_stdout(&plan.user(&t, &cert_dir, &name, &org)?),
                None => write_stdout(&lines(&plan.run(&t, &cert_dir)?)),
            }
        }
        KubeadmCommand::SignCsrs {
            config,
            cert_dir,
            kubeconfig_dir,
            token,
        } => {
            let cfg = match config {
                Some(f) => read_config(&f)?,
                None => KubeadmConfig::signing_defaults(),
            };
            let plan = SignCsrsPlan::new(&cfg, &cert_dir, kubeconfig_dir.as_deref())?;
            let o = open_and_login(&token.over(before)?, None)?;
            write_stdout(&lines(&plan.run(&context(&o))?))
        }
    }
}

fn read_config(file: &str) -> Result<KubeadmConfig> {
    let (bytes, name) = read_input(file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| p11ca::Error::input(format!("{name}: not UTF-8 text")))?;
    KubeadmConfig::parse(&text, &name)
}

fn context(o: &Opened) -> TokenContext<'_> {
    TokenContext {
        module: &o.module,
        token: &o.token,
        session: &o.session,
        pin: &o.pin,
    }
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

fn certs(config: &str, dir: &Path, dry_run: bool, targs: &TokenArgs) -> Result<()> {
    let cfg = read_config(config)?;
    // Every check that needs no token runs before a PIN is asked for.
    let plan = CertsPlan::new(&cfg, dir)?;
    for w in &plan.warnings {
        warn(w);
    }
    if dry_run {
        return write_stdout(&lines(&plan.describe()));
    }
    let o = open_and_login(targs, None)?;
    let t = context(&o);
    let report = plan.run(&t)?;
    write_stdout(&lines(&report))
}
