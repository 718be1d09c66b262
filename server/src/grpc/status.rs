//! The core's outcome codes as gRPC statuses: one to one, since the core speaks the canonical codes
//! gRPC carries.

use tonic::Status;

use crate::serving::{Code, ServingError};

/// The gRPC code of a core code.
pub fn code(code: Code) -> tonic::Code {
    tonic::Code::from_i32(code.number())
}

/// The status a client receives for `e`: its code, and the same one clean line the HTTP API sends.
pub fn status(e: ServingError) -> Status {
    Status::new(code(e.code()), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_number_and_name() {
        for c in Code::ALL {
            let grpc = code(c);
            assert_eq!(grpc as i32, c.number(), "{c:?}");
            assert_eq!(format!("{grpc:?}").to_uppercase(), c.name().replace('_', ""), "{c:?}");
        }
        let s = status(ServingError::invalid("images[3].raw.pixels", "too short"));
        assert_eq!((s.code(), s.message()), (tonic::Code::InvalidArgument, "images[3].raw.pixels: too short"));
    }
}
