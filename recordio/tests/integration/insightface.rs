//! insightface's layout and its `property` file: what rec_builder.py writes, and what
//! arcface_torch's reader concludes from record 0.

use facekit_recordio::insightface::{header_record, identity_record, image_record};
use facekit_recordio::{unpack, Error, IrHeader, Layout, Property, RecReader, RecWriter};
use std::path::Path;

#[test]
fn records_are_what_rec_builder_writes() {
    let (image, identity) = (image_record(7, 3.0, b"jpeg"), identity_record(12, 1, 5));
    let h = unpack(&image).unwrap();
    assert_eq!((h.header, h.labels.len(), h.image), (IrHeader { flag: 0, label: 3.0, id: 7, id2: 0 }, 0, &b"jpeg"[..]));
    let id = unpack(&identity).unwrap();
    assert_eq!(
        (id.header, id.labels, id.image),
        (IrHeader { flag: 2, label: 0.0, id: 12, id2: 0 }, vec![1.0, 5.0], &b""[..])
    );
    let head = header_record(12, 15);
    assert_eq!(head.len(), 32);
    let h0 = unpack(&head).unwrap();
    assert_eq!((h0.header, h0.labels.clone()), (IrHeader { flag: 2, label: 0.0, id: 0, id2: 1 }, vec![12.0, 15.0]));
    assert_eq!(Layout::detect(Some(&h0)), Layout::Insightface { images: 1..12, identities: 12..15 });
}

#[test]
fn a_written_insightface_set_is_detected_and_its_ranges_hold() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("train.rec");
    let mut w = RecWriter::create(&rec).unwrap();
    // As rec_builder does: images first (keys 1..), identities, then record 0 last.
    let people = [3u64, 1, 2];
    let mut key = 1;
    let mut ranges = Vec::new();
    for (label, n) in people.iter().enumerate() {
        let first = key;
        for _ in 0..*n {
            w.write(key, &image_record(key, label as f32, &[label as u8; 10])).unwrap();
            key += 1;
        }
        ranges.push((first, key));
    }
    let first_identity = key;
    for (first, end) in &ranges {
        w.write(key, &identity_record(key, *first, *end)).unwrap();
        key += 1;
    }
    w.write(0, &header_record(first_identity, key)).unwrap();
    w.finish().unwrap();

    let idx = facekit_recordio::read_idx(&t.path().join("train.idx")).unwrap();
    let reader = RecReader::open(&rec).unwrap();
    let offset = |k: u64| idx.iter().find(|e| e.key == k).unwrap().offset;
    let f0 = reader.read_at(offset(0), 1 << 20).unwrap();
    let Layout::Insightface { images, identities } = Layout::detect(Some(&unpack(&f0.payload).unwrap())) else {
        panic!()
    };
    assert_eq!((images.clone(), identities.clone()), (1..7, 7..10));
    for (i, k) in identities.enumerate() {
        let f = reader.read_at(offset(k), 1 << 20).unwrap();
        let v = unpack(&f.payload).unwrap().label_values();
        assert_eq!((v[0] as u64, v[1] as u64), ranges[i]);
        for img in v[0] as u64..v[1] as u64 {
            let f = reader.read_at(offset(img), 1 << 20).unwrap();
            assert_eq!(unpack(&f.payload).unwrap().label_values(), [i as f32]);
        }
    }
}

#[test]
fn anything_but_a_sane_range_in_record_0_is_plain() {
    let with = |labels: &[f32]| {
        let p = facekit_recordio::pack(IrHeader { flag: 0, label: 0.0, id: 0, id2: 0 }, labels, b"");
        Layout::detect(Some(&unpack(&p).unwrap()))
    };
    assert_eq!(Layout::detect(None), Layout::Plain);
    assert_eq!(Layout::detect(Some(&unpack(&image_record(0, 5.0, b"jpeg")).unwrap())), Layout::Plain);
    for bad in [
        &[5.0, 3.0][..],
        &[0.0, 3.0],
        &[1.5, 3.0],
        &[f32::NAN, 3.0],
        &[-1.0, 3.0],
        &[2.0, f32::INFINITY],
        &[2.0],
        &[2.0, 3.0, 4.0],
    ] {
        assert_eq!(with(bad), Layout::Plain, "{bad:?}");
    }
    assert_eq!(with(&[1.0, 1.0]), Layout::Insightface { images: 1..1, identities: 1..1 });
}

#[test]
fn property_is_classes_height_width() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("property");
    let prop = Property { classes: 85742, height: 112, width: 96 };
    prop.write(&p).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "85742,112,96\n");
    assert_eq!(Property::read(&p).unwrap(), prop);
    let name = Path::new("faces_emore/property");
    assert_eq!(Property::parse("93431, 112 ,112", name).unwrap(), Property { classes: 93431, height: 112, width: 112 });
    for bad in ["", "1,2", "1,2,3,4", "a,112,112", "1,112,112\n2,112,112\n", "-1,112,112", "1,112,99999999999"] {
        let err = Property::parse(bad, name).unwrap_err();
        assert!(
            matches!(err, Error::Line { .. }) && err.to_string().contains("faces_emore/property line"),
            "{bad:?}: {err}"
        );
    }
}
