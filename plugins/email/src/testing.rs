//! A scripted fake transport for the unit tests: expected writes and canned reads, the reads
//! cut into chunks of an odd size.

use std::collections::VecDeque;

use crate::Transport;

#[derive(Debug)]
pub(crate) enum Step {
    Write(Vec<u8>),
    Secret(String),
    Read(Vec<u8>),
    Tls,
    Close,
}

/// Plays a script; panics (failing the test) on any write that was not expected.
#[derive(Debug)]
pub(crate) struct Scripted {
    steps: VecDeque<Step>,
    chunk: usize,
    pub tls: bool,
}

impl Scripted {
    pub fn new(chunk: usize) -> Self {
        Scripted { steps: VecDeque::new(), chunk, tls: false }
    }

    /// The server sends `data`, in chunks of the script's size.
    pub fn server(mut self, data: impl AsRef<[u8]>) -> Self {
        for piece in data.as_ref().chunks(self.chunk) {
            self.steps.push_back(Step::Read(piece.to_vec()));
        }
        self
    }

    /// The client must write exactly `data`.
    pub fn client(mut self, data: impl AsRef<[u8]>) -> Self {
        self.steps.push_back(Step::Write(data.as_ref().to_vec()));
        self
    }

    /// The client must write this template through `write_secret`.
    pub fn secret(mut self, template: &str) -> Self {
        self.steps.push_back(Step::Secret(template.to_owned()));
        self
    }

    pub fn tls(mut self) -> Self {
        self.steps.push_back(Step::Tls);
        self
    }

    pub fn close(mut self) -> Self {
        self.steps.push_back(Step::Close);
        self
    }

    /// Whether the whole script was played.
    pub fn finished(&self) -> bool {
        self.steps.iter().all(|s| matches!(s, Step::Close))
    }

    pub fn remaining(&self) -> &VecDeque<Step> {
        &self.steps
    }
}

impl Transport for Scripted {
    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self.steps.pop_front() {
            Some(Step::Write(expected)) => {
                assert_eq!(String::from_utf8_lossy(data), String::from_utf8_lossy(&expected), "unexpected write");
                Ok(())
            }
            Some(Step::Close) | None => Err("connection reset".to_owned()),
            other => panic!("write {:?} while the script expects {other:?}", String::from_utf8_lossy(data)),
        }
    }

    fn write_secret(&mut self, template: &str) -> Result<(), String> {
        match self.steps.pop_front() {
            Some(Step::Secret(expected)) => {
                assert_eq!(template, expected, "unexpected secret template");
                Ok(())
            }
            other => panic!("write_secret {template:?} while the script expects {other:?}"),
        }
    }

    fn read(&mut self, max: usize, _timeout_ms: u32) -> Result<Vec<u8>, String> {
        match self.steps.pop_front() {
            Some(Step::Read(mut data)) => {
                if data.len() > max {
                    let rest = data.split_off(max);
                    self.steps.push_front(Step::Read(rest));
                }
                Ok(data)
            }
            Some(Step::Close) | None => {
                self.steps.push_front(Step::Close);
                Ok(Vec::new())
            }
            other => panic!("read while the script expects {other:?}"),
        }
    }

    fn start_tls(&mut self) -> Result<(), String> {
        match self.steps.pop_front() {
            Some(Step::Tls) => {
                self.tls = true;
                Ok(())
            }
            other => panic!("start_tls while the script expects {other:?}"),
        }
    }
}
