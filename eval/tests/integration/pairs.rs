//! LFW pairs files: both line forms, the official file, missing photos and people.

use facekit_eval::pairs::{self, FaceRef, MissingPolicy, PairList, Presence, RecordFaces};

#[test]
fn official_lfw_pairs_file_parses_into_ten_folds_of_both_forms() {
    let path = facekit_testkit::shared_data().join("lfw_pairs.txt");
    let list = PairList::read(&path).unwrap();
    assert_eq!((list.folds, list.per_fold, list.pairs.len()), (10, 300, 6000));
    // Count the forms independently of the parser: 3 fields = same person, 4 = two people.
    let text = std::fs::read_to_string(&path).unwrap();
    let three = text.lines().skip(1).filter(|l| l.split_whitespace().count() == 3).count();
    assert_eq!(list.pairs.iter().filter(|p| p.same).count(), three);
    let first = &list.pairs[0];
    assert_eq!(
        (first.left.name.as_str(), first.left.number, first.right.number, first.same),
        ("Abel_Pacheco", 1, 4, true)
    );
    assert_eq!(first.left.relative(), "Abel_Pacheco/Abel_Pacheco_0001.jpg");
    // Each fold is 300 same-person pairs, then 300 different-person pairs.
    assert!(list.pairs[..300].iter().all(|p| p.same) && list.pairs[300..600].iter().all(|p| !p.same));
}

#[test]
fn malformed_lines_and_wrong_counts_name_the_line() {
    let err = PairList::parse("1\t1\nAbel_Pacheco\t1\nA 1 B 2\n").unwrap_err();
    assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    let err = PairList::parse("1\t1\nAbel_Pacheco\tx\t2\nA 1 B 2\n").unwrap_err();
    assert!(format!("{err:#}").contains("line 2") && format!("{err:#}").contains("\"x\""), "{err:#}");
    let err = PairList::parse("2\t1\nAbel_Pacheco\t1\t2\nA 1 B 2\n").unwrap_err();
    assert!(format!("{err:#}").contains("promises 2 fold(s)"), "{err:#}");
}

fn mixed_list() -> PairList {
    // Over lfw100: a valid same pair, a valid different pair, a photo number that does not exist,
    // and a person who is not in lfw100.
    PairList::parse(
        "1\t2\nAriel_Sharon\t1\t2\nAriel_Sharon\t3\t9999\nAriel_Sharon\t1\tBill_Gates\t1\nNobody_Here\t1\tBill_Gates\t2\n",
    )
    .unwrap()
}

#[test]
fn missing_photos_and_people_are_errors_by_default() {
    let root = facekit_testkit::shared_data().join("lfw100");
    let err = pairs::resolve(&mixed_list(), MissingPolicy::Error, |f| pairs::presence_in_folder(&root, f)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("1 pair(s) name people missing") && msg.contains("1 name missing photos"), "{msg}");
    assert!(msg.contains("Ariel_Sharon_9999.jpg") && msg.contains("Nobody_Here"), "{msg}");
}

#[test]
fn skipped_pairs_are_counted_by_kind_and_the_rest_kept_in_order() {
    let root = facekit_testkit::shared_data().join("lfw100");
    let r = pairs::resolve(&mixed_list(), MissingPolicy::Skip, |f| pairs::presence_in_folder(&root, f)).unwrap();
    assert_eq!((r.missing_people, r.missing_images, r.pairs.len()), (1, 1, 2));
    assert_eq!(r.pairs[0].line, 2);
    assert_eq!(r.pairs[1].line, 4);
    assert!(r.pairs.iter().all(|p| p.left.path(&root).is_file() && p.right.path(&root).is_file()));
    assert_eq!(pairs::presence_in_folder(&root, &r.pairs[0].left), Presence::Found);
}

#[test]
fn record_paths_answer_for_faces_whatever_their_source_prefix() {
    let paths: [&[u8]; 4] = [
        b"lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg",
        b"Bill_Gates/Bill_Gates_0003.jpg",
        b"src\\Zoe/Zoe_0002.jpg",
        b"flat.jpg",
    ];
    let found = RecordFaces::new(paths.iter().enumerate().map(|(i, p)| (i, *p)));
    let face = |name: &str, number| FaceRef { name: name.into(), number };
    assert_eq!(found.record(&face("Abel_Pacheco", 1)), Some(0));
    assert_eq!(found.record(&face("Bill_Gates", 3)), Some(1));
    assert_eq!(found.record(&face("Zoe", 2)), Some(2));
    assert_eq!(found.presence(&face("Bill_Gates", 4)), Presence::NoImage);
    assert_eq!(found.presence(&face("Nobody", 1)), Presence::NoPerson);
    assert_eq!(found.presence(&face("Abel_Pacheco", 1)), Presence::Found);
}

#[test]
fn unique_faces_lists_each_photo_once_in_order_of_first_use() {
    let list = PairList::parse("1\t1\nA\t1\t2\nB\t1\tA\t2\n").unwrap();
    let (faces, index) = pairs::unique_faces(&list.pairs);
    assert_eq!(
        faces.iter().map(FaceRef::relative).collect::<Vec<_>>(),
        ["A/A_0001.jpg", "A/A_0002.jpg", "B/B_0001.jpg"]
    );
    assert_eq!(index, [(0, 1, true), (2, 1, false)]);
}

#[test]
fn a_pair_naming_one_photo_twice_is_refused_with_its_line() {
    for text in
        ["1\t2\nA\t1\t2\nA\t3\t3\nA\t1\tB\t2\nB\t1\tC\t2\n", "1\t2\nA\t1\t2\nB\t4\tC\t1\nA\t1\tB\t2\nA\t03\tA\t3\n"]
    {
        let err = format!("{:#}", PairList::parse(text).unwrap_err());
        let line = if text.contains("A\t3\t3") { "line 3" } else { "line 5" };
        assert!(err.contains(line) && err.contains("with itself"), "{err}");
    }
    // The same person's two photos, in either form, are a pair.
    let list = PairList::parse("1\t1\nA\t1\t2\nA\t1\tA\t3\n").unwrap();
    assert!(list.pairs.iter().all(|p| p.same));
}

/// The folds of `pairs`, cut as readers of a `.bin` cut them: scikit-learn's unshuffled KFold
/// (consecutive, the first `n % k` one larger).
fn kfold(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    (0..k)
        .map(|f| {
            let len = n / k + usize::from(f < n % k);
            start += len;
            start - len..start
        })
        .collect()
}

#[test]
fn leaving_out_a_pair_keeps_every_other_pair_in_its_own_fold() {
    let list = PairList::read(&facekit_testkit::shared_data().join("lfw_pairs.txt")).unwrap();
    assert_eq!(list.pairs[650].fold, 1);
    // One same-person pair of fold 3 and two different-person pairs of fold 8 cannot be used.
    let mut usable = vec![true; list.pairs.len()];
    for i in [1205, 4501, 4599] {
        usable[i] = false;
    }
    let kept = pairs::keep_folds(&list, &usable);
    let counts: Vec<(usize, usize, usize)> = kept.folds.iter().map(|f| (f.unusable, f.balanced, f.kept())).collect();
    let mut want = vec![(0, 3, 597); 10];
    want[2] = (1, 2, 597);
    want[7] = (2, 1, 597);
    assert_eq!(counts, want);
    assert_eq!(kept.balanced(), 3 * 10 - 3);
    // A reader cutting the kept pairs into 10 equal folds finds every pair in its file's fold,
    // and each fold keeps LFW's mix: 299 same-person then 298 different-person pairs.
    let n = kept.kept.len();
    for (fold, range) in kfold(n, 10).into_iter().enumerate() {
        let members = &kept.kept[range];
        assert!(members.iter().all(|&i| list.pairs[i].fold == fold), "fold {fold}");
        assert_eq!(members.iter().filter(|&&i| list.pairs[i].same).count(), 299, "fold {fold}");
    }
    assert!(kept.kept.iter().all(|&i| usable[i]) && kept.kept.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(kept.describe().len(), 10);
    assert!(
        kept.describe()[2].starts_with("fold 3: 3 of 600 left out (1 unusable, 2 to keep the folds equal), 597 kept"),
        "{:?}",
        kept.describe()
    );

    // Nothing unusable: nothing left out.
    let all = pairs::keep_folds(&list, &vec![true; list.pairs.len()]);
    assert_eq!(all.kept.len(), 6000);
    assert!(all.describe().is_empty());
}
