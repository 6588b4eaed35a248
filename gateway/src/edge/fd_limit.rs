//! The open-file limit, set at start-up like nginx's `worker_rlimit_nofile`: every client
//! connection is a descriptor, and so is every upstream connection, so a soft limit of 1024
//! (the usual default) would refuse clients long before memory runs out. Unset, the soft limit
//! is raised to the hard limit; set, to that value (above the hard limit only where the
//! process may raise it, as root).

/// What was done, for the start-up log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub before: u64,
    pub now: u64,
    /// Set when the configured value could not be applied in full.
    pub warning: Option<String>,
}

fn get() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

fn set(lim: &libc::rlimit) -> std::io::Result<()> {
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Applies `wanted` (None: the hard limit) to RLIMIT_NOFILE.
pub fn apply(wanted: Option<u64>) -> std::io::Result<Outcome> {
    let lim = get()?;
    let before = lim.rlim_cur as u64;
    let hard = lim.rlim_max as u64;
    let target = wanted.unwrap_or(hard);
    if target == before {
        return Ok(Outcome {
            before,
            now: before,
            warning: None,
        });
    }
    let raise_hard = target > hard;
    let attempt = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: if raise_hard {
            target as libc::rlim_t
        } else {
            lim.rlim_max
        },
    };
    match set(&attempt) {
        Ok(()) => Ok(Outcome {
            before,
            now: target,
            warning: None,
        }),
        Err(e) if raise_hard => {
            // Not allowed to raise the hard limit: go as far as it allows.
            set(&libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            })?;
            Ok(Outcome {
                before,
                now: hard,
                warning: Some(format!(
                    "worker_rlimit_nofile {target} is above the hard limit {hard}, which this \
                     process may not raise ({e}); using {hard}"
                )),
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_to_the_hard_limit_and_to_a_value() {
        let hard = get().unwrap().rlim_max as u64;
        let got = apply(None).unwrap();
        assert_eq!(got.now, hard);
        assert_eq!(get().unwrap().rlim_cur as u64, hard);
        let lower = hard.min(4096);
        let got = apply(Some(lower)).unwrap();
        assert_eq!(got.now, lower);
        assert_eq!(get().unwrap().rlim_cur as u64, lower);
        apply(None).unwrap();
    }
}
