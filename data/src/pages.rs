//! Pages: the records of the loader's datasets grouped by where they lie on disk. Page `p` of a
//! shard holds the records whose header starts in bytes `[p * page_bytes, (p + 1) * page_bytes)`
//! of the shard file, so a page is one contiguous read and never spans two shards. The
//! quasi-random order ([`crate::Order::QuasiRandom`]) draws records from a window of open pages,
//! and the read-ahead fetch ([`crate::Fetch::ReadAhead`]) reads and drops whole pages.

use std::ops::Range;

/// Where one page lies and which records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Global record number of its first record (its records are consecutive).
    pub first: u64,
    /// Number of records.
    pub count: u32,
    /// Dataset number, in the loader's order.
    pub dataset: usize,
    /// Shard number within the dataset.
    pub shard: usize,
    /// Byte range of its records in the shard file.
    pub bytes: Range<u64>,
}

impl Page {
    /// Global record numbers of its records.
    pub fn records(&self) -> Range<u64> {
        self.first..self.first + u64::from(self.count)
    }
}

/// The pages of all records, in global record order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pages {
    pages: Vec<Page>,
    len: u64,
}

impl Pages {
    /// Groups the records of `shards`, given as `(dataset, shard, records)` in global record
    /// order with each record as `(offset, length)` in stored order, into pages of `page_bytes`.
    pub fn new<R: IntoIterator<Item = (u64, u32)>>(
        shards: impl IntoIterator<Item = (usize, usize, R)>,
        page_bytes: u64,
    ) -> Pages {
        let page_bytes = page_bytes.max(1);
        let (mut pages, mut len) = (Vec::<Page>::new(), 0u64);
        for (dataset, shard, records) in shards {
            let mut current: Option<(u64, Page)> = None;
            for (offset, rec_len) in records {
                let number = offset / page_bytes;
                let end = offset + u64::from(rec_len);
                match current.as_mut() {
                    Some((n, page)) if *n == number => {
                        page.count += 1;
                        page.bytes.end = end;
                    }
                    _ => {
                        pages.extend(current.take().map(|(_, p)| p));
                        current = Some((number, Page { first: len, count: 1, dataset, shard, bytes: offset..end }));
                    }
                }
                len += 1;
            }
            pages.extend(current.map(|(_, p)| p));
        }
        Pages { pages, len }
    }

    /// The pages of the loader's datasets.
    pub(crate) fn of_datasets(datasets: &[std::sync::Arc<facekit_shard::Dataset>], page_bytes: u64) -> Pages {
        let shards = datasets.iter().enumerate().flat_map(|(d, ds)| {
            ds.shards()
                .iter()
                .enumerate()
                .map(move |(s, shard)| (d, s, shard.index().iter().map(|e| (e.offset, e.len))))
        });
        Pages::new(shards, page_bytes)
    }

    /// All pages.
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// Number of records.
    pub fn records(&self) -> u64 {
        self.len
    }

    /// The page that holds global record `g`.
    pub fn page_of(&self, g: u64) -> usize {
        self.pages.partition_point(|p| p.first <= g) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_file_blocks_and_never_span_shards() {
        let a = [(48, 100), (148, 100), (248, 100), (348, 700), (1048, 10)];
        let b = [(48, 2000), (2048, 10)];
        let pages = Pages::new([(0, 0, a.to_vec()), (0, 1, b.to_vec())], 256);
        let got: Vec<(u64, u32, usize, Range<u64>)> =
            pages.pages().iter().map(|p| (p.first, p.count, p.shard, p.bytes.clone())).collect();
        assert_eq!(
            got,
            vec![
                (0, 3, 0, 48..348),
                (3, 1, 0, 348..1048),
                (4, 1, 0, 1048..1058),
                (5, 1, 1, 48..2048),
                (6, 1, 1, 2048..2058)
            ]
        );
        assert_eq!(pages.records(), 7);
        assert_eq!((0..7).map(|g| pages.page_of(g)).collect::<Vec<_>>(), [0, 0, 0, 1, 2, 3, 4]);
    }
}
