//! Command line, nginx-like: `gateway -c FILE` runs, `-t` tests the file, `-s reload` signals
//! the running gateway; `-u` (graceful upgrade) and `-d` (daemon) are passed to Pingora.

use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/gateway/gateway.toml";

pub const HELP: &str = "\
gateway: a Pingora reverse proxy for MCP tool servers

USAGE:
    gateway [-c FILE] [-u] [-d]     run with the configuration FILE
    gateway -t [-c FILE]            check FILE and exit (0 = ok, 1 = problems, each named by key)
    gateway -s reload [-c FILE]     make the running gateway (pid from FILE's [server].pid_file)
                                    re-read its configuration (same as `kill -HUP <pid>`); refused
                                    when that gateway runs from another file than FILE
    gateway -h | --help             this help
    gateway -V | --version          the version

OPTIONS:
    -c, --conf FILE     configuration file (default /etc/gateway/gateway.toml)
    -t, --test          test the configuration and exit
    -s, --signal SIG    send SIG to the running gateway: reload | stop | quit
    -u, --upgrade       graceful upgrade: take the listening sockets over from the running
                        gateway (start this, then send SIGQUIT to the old process)
    -d, --daemon        run in the background (pid written to [server].pid_file)

SIGNALS:
    SIGHUP   reload the configuration (an invalid file changes nothing)
    SIGTERM  stop accepting, let requests and streams finish within [server].grace_period
    SIGQUIT  hand the sockets to a new process started with -u, then drain and exit
    SIGINT   stop now

LOGS:
    RUST_LOG overrides [server].error_log_level for the program's own log lines (stderr).
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    Test,
    Signal(String),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub config: PathBuf,
    /// Whether -c named the file (else it is DEFAULT_CONFIG), for the message when it is missing.
    pub config_given: bool,
    pub upgrade: bool,
    pub daemon: bool,
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut cli = Cli {
        command: Command::Run,
        config: PathBuf::from(DEFAULT_CONFIG),
        config_given: false,
        upgrade: false,
        daemon: false,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => cli.command = Command::Help,
            "-V" | "--version" | "-v" => cli.command = Command::Version,
            "-t" | "--test" => cli.command = Command::Test,
            "-u" | "--upgrade" => cli.upgrade = true,
            "-d" | "--daemon" => cli.daemon = true,
            "-c" | "--conf" => {
                let v = it.next().ok_or("-c needs a file name")?;
                cli.config = PathBuf::from(v);
                cli.config_given = true;
            }
            "-s" | "--signal" => {
                let v = it.next().ok_or("-s needs a signal: reload, stop or quit")?;
                if !matches!(v.as_str(), "reload" | "stop" | "quit") {
                    return Err(format!("-s {v}: unknown signal (reload, stop, quit)"));
                }
                cli.command = Command::Signal(v);
            }
            // Combined short flags such as -tc FILE are not supported; say so plainly.
            other if other.starts_with("--conf=") => {
                cli.config = PathBuf::from(&other["--conf=".len()..]);
                cli.config_given = true;
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(cli)
}

/// Where a running gateway records the configuration file it runs from: next to its pid file
/// (`run/gateway.pid` -> `run/gateway.pid.config`). A reload re-reads the running process's own
/// file, so `-s reload -c OTHER` reads this record to refuse a reload that would not apply OTHER.
pub fn config_record(pid_file: &Path) -> PathBuf {
    let mut name = pid_file.as_os_str().to_os_string();
    name.push(".config");
    PathBuf::from(name)
}

/// The configuration file as a running gateway and a signaller both name it: symlinks resolved
/// where the file exists, else the absolute path the loader made of it.
pub fn config_identity(file: &Path) -> PathBuf {
    std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())
}

/// Records `config_file` as the running gateway's configuration (see `config_record`).
pub fn record_config(pid_file: &Path, config_file: &Path) -> std::io::Result<()> {
    let record = config_record(pid_file);
    if let Some(dir) = record.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let line = format!("{}\n", config_identity(config_file).display());
    // Temp file + rename: a signaller never reads half a path.
    let tmp = PathBuf::from(format!("{}.tmp", record.display()));
    std::fs::write(&tmp, line)?;
    std::fs::rename(&tmp, &record)
}

/// The configuration file the gateway behind `pid_file` recorded, if it recorded one.
pub fn recorded_config(pid_file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config_record(pid_file)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Cli, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn forms() {
        let c = p(&["-t", "-c", "x.toml"]).unwrap();
        assert_eq!(c.command, Command::Test);
        assert_eq!(c.config, PathBuf::from("x.toml"));
        let c = p(&["-c", "x.toml", "-u", "-d"]).unwrap();
        assert_eq!(c.command, Command::Run);
        assert!(c.upgrade && c.daemon);
        assert_eq!(
            p(&["-s", "reload"]).unwrap().command,
            Command::Signal("reload".into())
        );
        assert!(p(&["-s", "bogus"]).is_err());
        assert!(p(&["-c"]).is_err());
        assert!(p(&["--nope"]).is_err());
        assert_eq!(p(&["--help"]).unwrap().command, Command::Help);
        assert!(!p(&["-s", "reload"]).unwrap().config_given);
        assert!(p(&["-s", "reload", "-c", "x.toml"]).unwrap().config_given);
        assert!(p(&["--conf=x.toml"]).unwrap().config_given);
    }

    #[test]
    fn config_record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("gateway.pid");
        assert_eq!(
            config_record(&pid_file),
            dir.path().join("gateway.pid.config")
        );
        assert_eq!(recorded_config(&pid_file), None);
        let conf = dir.path().join("a.toml");
        std::fs::write(&conf, "").unwrap();
        record_config(&pid_file, &conf).unwrap();
        assert_eq!(recorded_config(&pid_file), Some(config_identity(&conf)));
    }
}
