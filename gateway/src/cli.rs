//! Command line, nginx-like: `gateway -c FILE` runs, `-t` tests the file, `-s reload` signals
//! the running gateway; `-u` (graceful upgrade) and `-d` (daemon) are passed to Pingora.

use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/gateway/gateway.toml";

pub const HELP: &str = "\
gateway: a Pingora reverse proxy for MCP tool servers

USAGE:
    gateway [-c FILE] [-u] [-d]     run with the configuration FILE
    gateway -t [-c FILE]            check FILE and exit (0 = ok, 1 = problems, each named by key)
    gateway -s reload [-c FILE]     make the running gateway (pid from [server].pid_file) re-read
                                    its configuration (same as `kill -HUP <pid>`)
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
    pub upgrade: bool,
    pub daemon: bool,
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, String> {
    let mut cli = Cli {
        command: Command::Run,
        config: PathBuf::from(DEFAULT_CONFIG),
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
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(cli)
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
    }
}
