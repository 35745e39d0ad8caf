//! The demo's steps: each one a `lantern` command line, run in this process exactly as the shell
//! would run it, its output kept in a log file, and the line recorded for the report.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// One step that ran.
pub struct Step {
    /// The report section it belongs to (`em`, `sae`, `diff`, ...).
    pub section: &'static str,
    /// The command line after `lantern`.
    pub args: Vec<String>,
    pub seconds: f64,
    /// Its standard output and error.
    pub log: PathBuf,
}

/// Runs steps, shows them on one progress bar and remembers them.
pub struct Steps {
    logs: PathBuf,
    /// The organism's directory, written `$ORG` in the commands the report shows.
    org: PathBuf,
    /// The demo's output directory, written `$OUT`.
    out: PathBuf,
    pub done: Vec<Step>,
    bar: ProgressBar,
}

impl Steps {
    pub fn new(out: &Path, org: &Path, planned: usize) -> Result<Self> {
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("--out {}", out.display()))?;
        let bar = ProgressBar::new(planned as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} steps  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Ok(Self {
            logs,
            org: org.to_path_buf(),
            out: out.to_path_buf(),
            done: Vec::new(),
            bar,
        })
    }

    /// Runs `lantern ARGS` with its output going to `OUT/logs/NNN-<command>.txt`.
    pub fn run(&mut self, section: &'static str, args: Vec<String>) -> Result<()> {
        let n = self.done.len() + 1;
        // The command's words (`sae-train`), not its positional paths.
        let words: Vec<&str> = args
            .iter()
            .take_while(|a| !a.starts_with('-') && !a.contains(['/', '.']))
            .map(String::as_str)
            .collect();
        let log = self.logs.join(format!("{n:03}-{}.txt", words.join("-")));
        self.bar.set_message(self.display(&args));
        if self.bar.position() >= self.bar.length().unwrap_or(0) {
            self.bar.inc_length(1);
        }
        let start = Instant::now();
        let result = {
            let _quiet = Redirect::to(&log)?;
            crate::run_args(&args)
        };
        let seconds = start.elapsed().as_secs_f64();
        self.bar.inc(1);
        result.with_context(|| {
            format!(
                "demo step `lantern {}` failed (its output: {})",
                self.display(&args),
                log.display()
            )
        })?;
        self.done.push(Step {
            section,
            args,
            seconds,
            log,
        });
        Ok(())
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// A command line as the report shows it: `$ORG` and `$OUT` for the two directories,
    /// shell-quoted where needed.
    pub fn display(&self, args: &[String]) -> String {
        show(args, &self.org, &self.out)
    }
}

/// A command line as the report shows it: `$ORG` and `$OUT` for the two directories (only in
/// arguments that are paths under them), shell-quoted where needed.
fn show(args: &[String], org: &Path, out: &Path) -> String {
    let org = org.display().to_string();
    let out = out.display().to_string();
    // A path argument that starts with one of the two directories (never a flag that
    // happens to contain its name).
    let short = |a: &str, dir: &str, var: &str| -> Option<String> {
        let rest = a.strip_prefix(dir)?;
        (!dir.is_empty() && (rest.is_empty() || rest.starts_with('/')))
            .then(|| format!("{var}{rest}"))
    };
    args.iter()
        .map(|a| {
            let a = short(a, &org, "$ORG")
                .or_else(|| short(a, &out, "$OUT"))
                .unwrap_or_else(|| a.clone());
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./,:=$+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Standard output and error sent to a file until dropped (the steps' own tables and progress
/// bars go to their log; the demo's bar stays on the terminal between steps).
struct Redirect {
    saved: [i32; 2],
}

impl Redirect {
    fn to(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("{}", path.display()))?;
        std::io::stdout().flush().ok();
        std::io::stderr().flush().ok();
        // Dropped on an error below, it puts back what was redirected so far.
        let mut r = Self { saved: [-1; 2] };
        for (i, fd) in [1, 2].into_iter().enumerate() {
            // SAFETY: dup/dup2 on the process's own standard descriptors and an open file;
            // the originals are kept and put back in `drop`.
            unsafe {
                r.saved[i] = libc::dup(fd);
                if r.saved[i] < 0 || libc::dup2(file.as_raw_fd(), fd) < 0 {
                    anyhow::bail!(
                        "{}: cannot redirect the output of a demo step",
                        path.display()
                    );
                }
            }
        }
        Ok(r)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        std::io::stdout().flush().ok();
        std::io::stderr().flush().ok();
        for (i, fd) in [1, 2].into_iter().enumerate() {
            if self.saved[i] >= 0 {
                // SAFETY: puts back the descriptor saved in `to` and closes the copy.
                unsafe {
                    libc::dup2(self.saved[i], fd);
                    libc::close(self.saved[i]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::show;
    use std::path::Path;

    #[test]
    fn commands_name_the_two_directories_and_leave_other_words_alone() {
        let args: Vec<String> = [
            "organism",
            "eval",
            "--models",
            "/cache/org",
            "--out",
            "/w/o/eval",
            "--top",
            "/w/o",
            "/w/oo/x",
            "-o",
            "a b",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            show(&args, Path::new("/cache/org"), Path::new("/w/o")),
            "organism eval --models $ORG --out $OUT/eval --top $OUT /w/oo/x -o 'a b'"
        );
    }
}
