//! The gRPC codec of every generated client and server: prost's, with a larger decode buffer.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The buffer a message is decoded from. tonic's default (8 KiB) is smaller than a typical
/// AdmissionReview (the benchmark's is 8.9 KB), so the buffer was reallocated, and what it
/// held copied, for most reviews: about 2% of the admission server's CPU in a profile.
pub const DECODE_BUFFER_SIZE: usize = 16 * 1024;

/// tonic's default: how much a streaming encoder buffers before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`tonic_prost::ProstCodec`] with a decode buffer of [`DECODE_BUFFER_SIZE`]; encoding is
/// unchanged (answers are small).
#[derive(Debug, Clone, Copy)]
pub struct PortcullisCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for PortcullisCodec<T, U> {
    fn default() -> Self {
        PortcullisCodec(PhantomData)
    }
}

impl<T, U> Codec for PortcullisCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(DECODE_BUFFER_SIZE, YIELD_THRESHOLD))
    }
}
