//! Audio input: decoding files (WAV, FLAC, OGG Vorbis, MP3 through symphonia) and raw PCM,
//! mixing down to mono and resampling to the frontend's rate, chunk by chunk.
//!
//! A file is never loaded whole: [`AudioReader::next_chunk`] decodes one packet at a time and
//! returns the mono, resampled samples it yields. Every error names the file and the problem;
//! nothing here panics on bad input. A problem found at the end of a file (truncation) is
//! reported after all samples that could be read have been returned, so a caller never loses
//! what the readable part contained.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::path::Path;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CODEC_TYPE_MP3, CODEC_TYPE_NULL, CODEC_TYPE_VORBIS, Decoder, DecoderOptions,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::resample::{ResampleError, StreamResampler};

/// The rate every source is converted to, in Hz (the frontend's input rate).
pub const TARGET_RATE: u32 = 16_000;

/// Consecutive undecodable packets after which a file is declared corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 16;

/// What went wrong reading audio. Every variant names the source (a path, or `<stdin>`).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("{name}: cannot read: {source}")]
    Io {
        /// The source.
        name: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Zero bytes.
    #[error("{name}: empty file (0 bytes)")]
    EmptyFile {
        /// The source.
        name: String,
    },
    /// Not a container format hark reads.
    #[error(
        "{name}: not audio, or a format hark does not read (WAV, FLAC, OGG Vorbis, MP3): {detail}"
    )]
    NotAudio {
        /// The source.
        name: String,
        /// What the probe said.
        detail: String,
    },
    /// The container holds no audio track.
    #[error("{name}: no audio track in the file")]
    NoTrack {
        /// The source.
        name: String,
    },
    /// The track's codec is not one hark decodes.
    #[error("{name}: unsupported codec {codec}: {detail}")]
    UnsupportedCodec {
        /// The source.
        name: String,
        /// The codec's name.
        codec: String,
        /// What the decoder factory said.
        detail: String,
    },
    /// The track does not say its sample rate.
    #[error("{name}: the file does not give its sample rate")]
    UnknownRate {
        /// The source.
        name: String,
    },
    /// The sample rate is out of range.
    #[error("{name}: {source}")]
    Rate {
        /// The source.
        name: String,
        /// The resampler's reason.
        #[source]
        source: ResampleError,
    },
    /// The file decoded to no samples at all.
    #[error("{name}: holds no audio samples")]
    NoSamples {
        /// The source.
        name: String,
    },
    /// The file ended before the length its header announces.
    #[error(
        "{name}: truncated: the header announces {expected} sample frames, the file ends after {got} ({got_s:.3} s)"
    )]
    Truncated {
        /// The source.
        name: String,
        /// Frames announced by the header.
        expected: u64,
        /// Frames read.
        got: u64,
        /// Seconds read.
        got_s: f64,
    },
    /// Too many packets in a row could not be decoded.
    #[error("{name}: corrupt audio data at {at_s:.3} s: {detail}")]
    Corrupt {
        /// The source.
        name: String,
        /// Where, in seconds of audio read so far.
        at_s: f64,
        /// The decoder's message.
        detail: String,
    },
    /// Raw PCM input ended in the middle of a sample.
    #[error("{name}: raw PCM input ends with {bytes} stray bytes (not a whole sample frame)")]
    PartialSample {
        /// The source.
        name: String,
        /// Leftover bytes.
        bytes: usize,
    },
}

/// What a decoder found out about its source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// The source's name (path or `<stdin>`).
    pub name: String,
    /// Codec or sample format, for messages.
    pub codec: String,
    /// Native sample rate in Hz.
    pub sample_rate: u32,
    /// Channel count (mixed down to mono).
    pub channels: usize,
    /// Sample frames announced by the header, if any.
    pub frames: Option<u64>,
}

/// Decodes one audio file into mono samples at [`TARGET_RATE`], chunk by chunk.
pub struct AudioReader {
    info: SourceInfo,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    truncation_slack: u64,
    sample_buf: Option<SampleBuffer<f32>>,
    mono: Vec<f32>,
    resampler: StreamResampler,
    out: Vec<f32>,
    decoded_frames: u64,
    decode_errors: u64,
    consecutive_errors: u32,
    done: bool,
    /// An error found at the end, returned once the last samples have been handed out.
    pending: Option<AudioError>,
}

impl std::fmt::Debug for AudioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioReader")
            .field("info", &self.info)
            .field("decoded_frames", &self.decoded_frames)
            .finish_non_exhaustive()
    }
}

impl AudioReader {
    /// Opens and probes a file. Fails if it is not audio hark can decode.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AudioError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| AudioError::Io {
            name: name.clone(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| AudioError::Io {
                name: name.clone(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(AudioError::EmptyFile { name });
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_owned);
        Self::from_source(Box::new(file), name, ext.as_deref())
    }

    /// Probes any seekable or unseekable media source. `ext` is a hint (e.g. `"flac"`).
    pub fn from_source(
        source: Box<dyn MediaSource>,
        name: String,
        ext: Option<&str>,
    ) -> Result<Self, AudioError> {
        let mss = MediaSourceStream::new(source, Default::default());
        let mut hint = Hint::new();
        if let Some(e) = ext {
            hint.with_extension(e);
        }
        let probed = symphonia::default::get_probe()
            .format(
                &hint,
                mss,
                // Gapless: trim encoder delay and padding (MP3 LAME tags...), so times hold.
                &FormatOptions {
                    enable_gapless: true,
                    ..Default::default()
                },
                &MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymError::IoError(ref io) if io.kind() == ErrorKind::UnexpectedEof => {
                    AudioError::NotAudio {
                        name: name.clone(),
                        detail: "the file ends before a complete header".into(),
                    }
                }
                SymError::IoError(source) => AudioError::Io {
                    name: name.clone(),
                    source,
                },
                other => AudioError::NotAudio {
                    name: name.clone(),
                    detail: other.to_string(),
                },
            })?;
        let format = probed.format;
        let track = format
            .tracks()
            .iter()
            .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
            .ok_or_else(|| AudioError::NoTrack { name: name.clone() })?;
        let params = &track.codec_params;
        let codec_name = symphonia::default::get_codecs()
            .get_codec(params.codec)
            .map_or_else(
                || format!("{:?}", params.codec),
                |d| d.short_name.to_string(),
            );
        let decoder = symphonia::default::get_codecs()
            .make(params, &DecoderOptions::default())
            .map_err(|e| AudioError::UnsupportedCodec {
                name: name.clone(),
                codec: codec_name.clone(),
                detail: e.to_string(),
            })?;
        let sample_rate = params
            .sample_rate
            .ok_or_else(|| AudioError::UnknownRate { name: name.clone() })?;
        let resampler =
            StreamResampler::new(sample_rate, TARGET_RATE).map_err(|source| AudioError::Rate {
                name: name.clone(),
                source,
            })?;
        // Lossy codecs announce lengths that include or exclude encoder delay and padding.
        let truncation_slack =
            if params.codec == CODEC_TYPE_MP3 || params.codec == CODEC_TYPE_VORBIS {
                4608
            } else {
                0
            };
        let info = SourceInfo {
            name,
            codec: codec_name,
            sample_rate,
            channels: params.channels.map_or(0, |c| c.count()),
            frames: params.n_frames,
        };
        Ok(Self {
            track_id: track.id,
            info,
            format,
            decoder,
            truncation_slack,
            sample_buf: None,
            mono: Vec::new(),
            resampler,
            out: Vec::with_capacity(8192),
            decoded_frames: 0,
            decode_errors: 0,
            consecutive_errors: 0,
            done: false,
            pending: None,
        })
    }

    /// What the probe found.
    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Sample frames decoded so far, at the source's own rate.
    pub fn decoded_frames(&self) -> u64 {
        self.decoded_frames
    }

    /// Non-finite samples replaced by 0.0 before resampling (at the native rate).
    pub fn nonfinite_samples(&self) -> u64 {
        self.resampler.nonfinite_samples()
    }

    /// Packets skipped because they could not be decoded (isolated glitches).
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The next chunk of mono samples at [`TARGET_RATE`]; `Ok(None)` at the end. An error
    /// found at the end of the file comes after the last readable samples.
    pub fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError> {
        self.out.clear();
        while self.out.is_empty() {
            if self.done {
                return match self.pending.take() {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.finish();
                    continue;
                }
                Err(SymError::ResetRequired) => {
                    self.finish();
                    continue;
                }
                Err(SymError::IoError(source)) => {
                    self.done = true;
                    return Err(AudioError::Io {
                        name: self.info.name.clone(),
                        source,
                    });
                }
                Err(e) => {
                    self.done = true;
                    return Err(self.corrupt(e.to_string()));
                }
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            match self.decoder.decode(&packet) {
                Ok(decoded) => {
                    self.consecutive_errors = 0;
                    let spec = *decoded.spec();
                    let frames = decoded.frames();
                    if frames == 0 {
                        continue;
                    }
                    if spec.rate != self.info.sample_rate {
                        self.done = true;
                        return Err(self.corrupt(format!(
                            "the sample rate changes from {} Hz to {} Hz mid-stream",
                            self.info.sample_rate, spec.rate
                        )));
                    }
                    let channels = spec.channels.count().max(1);
                    self.info.channels = channels;
                    let need = decoded.capacity() as u64;
                    if self
                        .sample_buf
                        .as_ref()
                        .is_none_or(|b| (b.capacity() as u64) < need * channels as u64)
                    {
                        self.sample_buf = Some(SampleBuffer::new(need, spec));
                    }
                    let sb = self.sample_buf.as_mut().expect("just ensured");
                    sb.copy_interleaved_ref(decoded);
                    self.mono.clear();
                    let scale = 1.0 / channels as f32;
                    self.mono.extend(
                        sb.samples()
                            .chunks_exact(channels)
                            .map(|f| f.iter().sum::<f32>() * scale),
                    );
                    self.decoded_frames += frames as u64;
                    self.resampler.push(&self.mono, &mut self.out);
                }
                Err(SymError::DecodeError(msg)) => {
                    self.decode_errors += 1;
                    self.consecutive_errors += 1;
                    if self.consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS {
                        self.done = true;
                        return Err(self.corrupt(format!(
                            "{MAX_CONSECUTIVE_DECODE_ERRORS} packets in a row cannot be decoded ({msg})"
                        )));
                    }
                }
                Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.finish();
                    continue;
                }
                Err(e) => {
                    self.done = true;
                    return Err(self.corrupt(e.to_string()));
                }
            }
        }
        Ok(Some(&self.out))
    }

    fn corrupt(&self, detail: String) -> AudioError {
        AudioError::Corrupt {
            name: self.info.name.clone(),
            at_s: self.decoded_frames as f64 / self.info.sample_rate as f64,
            detail,
        }
    }

    /// End of stream: flush the resampler into `self.out` and judge what was read; an error
    /// waits in `self.pending` until the flushed samples have been handed out.
    fn finish(&mut self) {
        self.done = true;
        self.resampler.finish(&mut self.out);
        if self.decoded_frames == 0 {
            self.pending = Some(AudioError::NoSamples {
                name: self.info.name.clone(),
            });
        } else if let Some(expected) = self.info.frames
            && self.decoded_frames + self.truncation_slack < expected
        {
            self.pending = Some(AudioError::Truncated {
                name: self.info.name.clone(),
                expected,
                got: self.decoded_frames,
                got_s: self.decoded_frames as f64 / self.info.sample_rate as f64,
            });
        }
    }
}

/// Raw PCM sample formats accepted on standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmFormat {
    /// Signed 16-bit little-endian integers.
    S16Le,
    /// 32-bit little-endian IEEE floats.
    F32Le,
}

impl PcmFormat {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            PcmFormat::S16Le => 2,
            PcmFormat::F32Le => 4,
        }
    }
}

impl std::str::FromStr for PcmFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "s16le" => Ok(PcmFormat::S16Le),
            "f32le" => Ok(PcmFormat::F32Le),
            other => Err(format!(
                "unknown raw PCM format {other:?} (expected s16le or f32le)"
            )),
        }
    }
}

/// Reads raw interleaved PCM (e.g. standard input) into mono samples at [`TARGET_RATE`].
pub struct PcmReader<R: Read> {
    name: String,
    input: R,
    format: PcmFormat,
    channels: usize,
    bytes: Vec<u8>,
    held: usize,
    mono: Vec<f32>,
    resampler: StreamResampler,
    out: Vec<f32>,
    frames: u64,
    done: bool,
}

impl<R: Read> std::fmt::Debug for PcmReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcmReader")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl<R: Read> PcmReader<R> {
    /// Raw PCM of `format` with `channels` interleaved channels at `rate` Hz.
    pub fn new(
        input: R,
        name: impl Into<String>,
        format: PcmFormat,
        rate: u32,
        channels: usize,
    ) -> Result<Self, AudioError> {
        let name = name.into();
        let resampler =
            StreamResampler::new(rate, TARGET_RATE).map_err(|source| AudioError::Rate {
                name: name.clone(),
                source,
            })?;
        let channels = channels.max(1);
        Ok(Self {
            name,
            input,
            format,
            channels,
            bytes: vec![0; 4096 * format.bytes() * channels],
            held: 0,
            mono: Vec::with_capacity(4096),
            resampler,
            out: Vec::with_capacity(8192),
            frames: 0,
            done: false,
        })
    }

    /// Sample frames read so far, at the input rate.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Non-finite samples replaced by 0.0 before resampling.
    pub fn nonfinite_samples(&self) -> u64 {
        self.resampler.nonfinite_samples()
    }

    /// The next chunk of mono samples at [`TARGET_RATE`]; `Ok(None)` at the end of input.
    pub fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError> {
        self.out.clear();
        while self.out.is_empty() && !self.done {
            let n = match self.input.read(&mut self.bytes[self.held..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.done = true;
                    return Err(AudioError::Io {
                        name: self.name.clone(),
                        source,
                    });
                }
            };
            if n == 0 {
                self.done = true;
                self.resampler.finish(&mut self.out);
                if self.held > 0 {
                    let bytes = self.held;
                    self.held = 0;
                    if self.out.is_empty() {
                        return Err(AudioError::PartialSample {
                            name: self.name.clone(),
                            bytes,
                        });
                    }
                }
                break;
            }
            self.held += n;
            let frame_bytes = self.format.bytes() * self.channels;
            let whole = self.held / frame_bytes * frame_bytes;
            self.mono.clear();
            let scale = 1.0 / self.channels as f32;
            for frame in self.bytes[..whole].chunks_exact(frame_bytes) {
                let sum: f32 = match self.format {
                    PcmFormat::S16Le => frame
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                        .sum(),
                    PcmFormat::F32Le => frame
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .sum(),
                };
                self.mono.push(sum * scale);
            }
            self.frames += (whole / frame_bytes) as u64;
            self.bytes.copy_within(whole..self.held, 0);
            self.held -= whole;
            self.resampler.push(&self.mono, &mut self.out);
        }
        Ok((!self.out.is_empty()).then_some(&self.out[..]))
    }
}

/// A source of mono samples at [`TARGET_RATE`], chunk by chunk: a decoded file or raw PCM.
pub trait ChunkSource {
    /// The next chunk; `Ok(None)` at the end. An error comes after the last readable samples.
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError>;
    /// Non-finite samples replaced by 0.0 before resampling.
    fn nonfinite_samples(&self) -> u64;
}

impl ChunkSource for AudioReader {
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError> {
        AudioReader::next_chunk(self)
    }
    fn nonfinite_samples(&self) -> u64 {
        AudioReader::nonfinite_samples(self)
    }
}

impl<R: Read> ChunkSource for PcmReader<R> {
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, AudioError> {
        PcmReader::next_chunk(self)
    }
    fn nonfinite_samples(&self) -> u64 {
        PcmReader::nonfinite_samples(self)
    }
}

/// A whole decoded file: mono samples at [`TARGET_RATE`].
#[derive(Debug, Clone)]
pub struct Decoded {
    /// What the probe found.
    pub info: SourceInfo,
    /// Mono samples at [`TARGET_RATE`].
    pub samples: Vec<f32>,
}

/// Decodes a whole file into memory (for short clips: training data, tests). Long recordings
/// should be streamed with [`AudioReader`] instead.
pub fn read_file(path: impl AsRef<Path>) -> Result<Decoded, AudioError> {
    let mut reader = AudioReader::open(path)?;
    let mut samples = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        samples.extend_from_slice(chunk);
    }
    Ok(Decoded {
        info: reader.info().clone(),
        samples,
    })
}
