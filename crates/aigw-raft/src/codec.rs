//! The one binary encoding of this crate: postcard for Raft entries, bookkeeping records and
//! network payloads.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value that does not encode or decode.
#[derive(Debug, thiserror::Error)]
#[error("postcard: {0}")]
pub(crate) struct CodecError(#[from] postcard::Error);

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, EntryPayload, LogId, Membership};

    use super::*;
    use crate::types::{Command, TypeConfig};

    fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn entries_round_trip() {
        let nodes: BTreeMap<u64, BasicNode> = (1..=3)
            .map(|id| (id, BasicNode::new(format!("127.0.0.1:{id}"))))
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let entries: Vec<openraft::Entry<TypeConfig>> = vec![
            openraft::Entry {
                log_id: log_id(1, 1, 0),
                payload: EntryPayload::Blank,
            },
            openraft::Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Membership(membership),
            },
            openraft::Entry {
                log_id: log_id(7, 3, u64::MAX - 1),
                payload: EntryPayload::Normal(Command(vec![0, 1, 2, 255])),
            },
        ];
        for entry in entries {
            let bytes = encode(&entry).expect("encode");
            let back: openraft::Entry<TypeConfig> = decode(&bytes).expect("decode");
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn commands_encode_as_byte_strings() {
        // A length prefix plus the raw bytes: no per-byte framing.
        let bytes = encode(&Command(vec![7; 300])).expect("encode");
        assert_eq!(bytes.len(), 2 + 300);
    }
}
