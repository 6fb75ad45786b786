//! Live capture: a cpal input stream whose callback only pushes samples into a lock-free SPSC
//! ring buffer (ringbuf) and counts what did not fit; the processing thread pops them, mixes
//! down to mono and resamples to 16 kHz.
//!
//! The audio callback never locks, allocates or blocks: samples of any format are converted
//! through a fixed stack buffer and pushed; overflow and stream errors are atomics. A stream
//! error (device unplugged, server gone) is seen by the processing thread on its next
//! [`Capture::read`], which returns [`CaptureError::Stream`]; the caller reconnects with
//! backoff (see `hark listen`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, SampleFormat, SizedSample, StreamConfig};
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer, Observer, Producer, Split};

use crate::audio::TARGET_RATE;
use crate::resample::{ResampleError, StreamResampler};

/// What the capture was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// Input device: `None` for the host's default, else a name (or a part of one, or a
    /// device id) as `hark listen --list-devices` prints them.
    pub device: Option<String>,
    /// Requested sample rate in Hz; `None` takes the device's default. Whatever rate is
    /// granted is resampled to 16 kHz.
    pub sample_rate: Option<u32>,
    /// Requested channel count; `None` takes the device's default. Channels are averaged.
    pub channels: Option<u16>,
    /// Requested period in frames; `None` leaves it to the host.
    pub buffer_frames: Option<u32>,
    /// Ring buffer capacity in seconds of audio (default 2 s).
    pub ring_seconds: f32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            device: None,
            sample_rate: None,
            channels: None,
            buffer_frames: None,
            ring_seconds: 2.0,
        }
    }
}

/// Why capture failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No device (of that name).
    #[error("no audio input device{}{}", .wanted.as_ref().map(|w| format!(" matching {w:?}")).unwrap_or_default(), if .available.is_empty() { String::new() } else { format!(" (available: {})", .available.join(", ")) })]
    NoDevice {
        /// The name asked for.
        wanted: Option<String>,
        /// Input devices seen.
        available: Vec<String>,
    },
    /// The device refused to be configured or started.
    #[error("audio input device {device:?} cannot be opened: {detail}")]
    Open {
        /// The device.
        device: String,
        /// cpal's message.
        detail: String,
    },
    /// A sample format hark does not convert.
    #[error(
        "audio input device {device:?} offers sample format {format}, which hark does not read"
    )]
    Format {
        /// The device.
        device: String,
        /// The format.
        format: String,
    },
    /// The rate cannot be resampled.
    #[error("audio input device {device:?}: {source}")]
    Rate {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: ResampleError,
    },
    /// The running stream failed (device disconnected...).
    #[error("audio input stream of {device:?} stopped: {reason}")]
    Stream {
        /// The device.
        device: String,
        /// What cpal reported.
        reason: &'static str,
    },
}

const ERR_NONE: u8 = 0;
const ERR_GONE: u8 = 1;
const ERR_OTHER: u8 = 2;

/// A running capture.
pub struct Capture {
    device: String,
    _stream: cpal::Stream,
    consumer: ringbuf::HeapCons<f32>,
    dropped: Arc<AtomicU64>,
    error: Arc<AtomicU8>,
    channels: usize,
    rate: u32,
    interleaved: Vec<f32>,
    mono: Vec<f32>,
    resampler: StreamResampler,
    frames: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("device", &self.device)
            .field("rate", &self.rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Names of the host's input devices.
pub fn input_device_names() -> Vec<String> {
    cpal::default_host()
        .input_devices()
        .map(|ds| ds.map(|d| d.to_string()).collect())
        .unwrap_or_default()
}

fn find_device(wanted: Option<&str>) -> Result<cpal::Device, CaptureError> {
    let host = cpal::default_host();
    let no_device = || CaptureError::NoDevice {
        wanted: wanted.map(str::to_owned),
        available: input_device_names(),
    };
    match wanted {
        None => host.default_input_device().ok_or_else(no_device),
        Some(w) => {
            let devices: Vec<cpal::Device> =
                host.input_devices().map_err(|_| no_device())?.collect();
            let exact = devices.iter().position(|d| {
                d.to_string() == w || d.id().map(|i| i.to_string() == w).unwrap_or(false)
            });
            let partial = || devices.iter().position(|d| d.to_string().contains(w));
            match exact.or_else(partial) {
                Some(i) => Ok(devices.into_iter().nth(i).expect("index from position")),
                None => Err(no_device()),
            }
        }
    }
}

/// Pushes a callback's samples into the ring, converting through a stack buffer.
fn push_converted<T: Copy>(
    data: &[T],
    producer: &mut ringbuf::HeapProd<f32>,
    dropped: &AtomicU64,
    convert: impl Fn(T) -> f32,
) {
    let mut buf = [0.0f32; 512];
    for chunk in data.chunks(buf.len()) {
        for (d, &s) in buf.iter_mut().zip(chunk) {
            *d = convert(s);
        }
        let n = producer.push_slice(&buf[..chunk.len()]);
        if n < chunk.len() {
            dropped.fetch_add((chunk.len() - n) as u64, Ordering::Relaxed);
        }
    }
}

impl Capture {
    /// Opens the device and starts capturing.
    pub fn start(cfg: &CaptureConfig) -> Result<Self, CaptureError> {
        let device = find_device(cfg.device.as_deref())?;
        let name = device.to_string();
        let open = |detail: String| CaptureError::Open {
            device: name.clone(),
            detail,
        };
        let default = device
            .default_input_config()
            .map_err(|e| open(e.to_string()))?;
        let format = default.sample_format();
        let config = StreamConfig {
            channels: cfg.channels.unwrap_or(default.channels()),
            sample_rate: cfg.sample_rate.unwrap_or(default.sample_rate()),
            buffer_size: cfg
                .buffer_frames
                .map_or(BufferSize::Default, BufferSize::Fixed),
        };
        let channels = config.channels.max(1) as usize;
        let rate = config.sample_rate;
        let resampler =
            StreamResampler::new(rate, TARGET_RATE).map_err(|source| CaptureError::Rate {
                device: name.clone(),
                source,
            })?;
        let capacity = ((rate as f32 * cfg.ring_seconds.max(0.1)) as usize * channels).max(4096);
        let (producer, consumer) = HeapRb::<f32>::new(capacity).split();
        let dropped = Arc::new(AtomicU64::new(0));
        let error = Arc::new(AtomicU8::new(ERR_NONE));
        let stream = match format {
            SampleFormat::F32 => build::<f32>(&device, &config, producer, &dropped, &error, |s| s),
            SampleFormat::I16 => build::<i16>(&device, &config, producer, &dropped, &error, |s| {
                s as f32 / 32768.0
            }),
            SampleFormat::I32 => build::<i32>(&device, &config, producer, &dropped, &error, |s| {
                s as f32 / 2_147_483_648.0
            }),
            SampleFormat::U16 => build::<u16>(&device, &config, producer, &dropped, &error, |s| {
                (s as f32 - 32768.0) / 32768.0
            }),
            SampleFormat::I8 => build::<i8>(&device, &config, producer, &dropped, &error, |s| {
                s as f32 / 128.0
            }),
            SampleFormat::U8 => build::<u8>(&device, &config, producer, &dropped, &error, |s| {
                (s as f32 - 128.0) / 128.0
            }),
            SampleFormat::F64 => {
                build::<f64>(&device, &config, producer, &dropped, &error, |s| s as f32)
            }
            other => {
                return Err(CaptureError::Format {
                    device: name,
                    format: other.to_string(),
                });
            }
        }
        .map_err(|e| open(e.to_string()))?;
        stream.play().map_err(|e| open(e.to_string()))?;
        Ok(Self {
            device: name,
            _stream: stream,
            consumer,
            dropped,
            error,
            channels,
            rate,
            interleaved: vec![0.0; capacity],
            mono: Vec::with_capacity(capacity / channels + 1),
            resampler,
            frames: 0,
        })
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's rate in Hz and channel count.
    pub fn format(&self) -> (u32, usize) {
        (self.rate, self.channels)
    }

    /// Samples the callback could not push because the ring was full (the processing thread
    /// fell behind).
    pub fn dropped_samples(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Non-finite samples from the device replaced by 0.0 before resampling.
    pub fn nonfinite_samples(&self) -> u64 {
        self.resampler.nonfinite_samples()
    }

    /// Frames captured so far, at the device rate.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends whatever has been captured since the last call to `out`, as mono 16 kHz
    /// samples. Never blocks; returns the number of samples appended.
    pub fn read(&mut self, out: &mut Vec<f32>) -> Result<usize, CaptureError> {
        match self.error.load(Ordering::Relaxed) {
            ERR_NONE => {}
            code => {
                return Err(CaptureError::Stream {
                    device: self.device.clone(),
                    reason: if code == ERR_GONE {
                        "the device is no longer available"
                    } else {
                        "the audio backend reported an error"
                    },
                });
            }
        }
        let before = out.len();
        loop {
            let avail = self.consumer.occupied_len() / self.channels * self.channels;
            if avail == 0 {
                break;
            }
            let n = self.consumer.pop_slice(&mut self.interleaved[..avail]);
            self.mono.clear();
            let scale = 1.0 / self.channels as f32;
            self.mono.extend(
                self.interleaved[..n]
                    .chunks_exact(self.channels)
                    .map(|f| f.iter().sum::<f32>() * scale),
            );
            self.frames += self.mono.len() as u64;
            self.resampler.push(&self.mono, out);
        }
        Ok(out.len() - before)
    }
}

fn build<T: SizedSample + Copy + Send + 'static>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut producer: ringbuf::HeapProd<f32>,
    dropped: &Arc<AtomicU64>,
    error: &Arc<AtomicU8>,
    convert: fn(T) -> f32,
) -> Result<cpal::Stream, cpal::Error> {
    let dropped = dropped.clone();
    let error = error.clone();
    device.build_input_stream::<T, _, _>(
        *config,
        move |data: &[T], _| push_converted(data, &mut producer, &dropped, convert),
        move |e: cpal::Error| {
            let code = match e.kind() {
                cpal::ErrorKind::DeviceNotAvailable => ERR_GONE,
                // Glitches the stream survives.
                cpal::ErrorKind::Xrun | cpal::ErrorKind::DeviceChanged => return,
                _ => ERR_OTHER,
            };
            error.store(code, Ordering::Relaxed);
        },
        None,
    )
}
