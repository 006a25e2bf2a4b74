"""Accuracy of the tail in reduced precision (fp16 / bf16) against fp32, paired on the same images.

The head runs once per image on the CPU in fp32 (as on an edge); its tensors (optionally through the
codec's round trip, as the cloud receives them) go through the fp32 tail on the CPU and through the tail
on --device in each precision. Reported per precision: COCO AP and AP50 on coco-mini, the paired
difference to fp32 with its jackknife standard error (dnn/eval_coco.py, as `splitinfer eval` does),
and the fidelity to the fp32 detections (fidelity AP50, detections lost / added at the live threshold).

    python bench/precision.py --precisions bf16                      # this CPU
    python bench/precision.py --device cuda --precisions fp16,bf16   # a GPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main() -> int:
    from splitinfer.codec import CodecProfile
    from splitinfer.dnn import load_model
    from splitinfer.dnn.device import place_model, resolve_device, resolve_precision
    from splitinfer.dnn.eval_codec import SequenceRoundtrip
    from splitinfer.dnn.eval_coco import PerImageAP, count_lost_added, fidelity_ap50, jackknife_se, to_coco_results
    from splitinfer.dnn.eval_images import iter_source
    from splitinfer.dnn.evaluation import _load_coco, coco_annotations_for
    from splitinfer.dnn.yolo_postprocess import EVAL_SCORE_THRESHOLD, LIVE_SCORE_THRESHOLD
    from splitinfer.sample_data import shared_data_dir

    data = shared_data_dir()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolo-fastest-1.1-xl")
    parser.add_argument("--weights", default=str(data / "models" / "yolo-fastest-1.1"))
    parser.add_argument("--cut", default=None)
    parser.add_argument("--codec", default="none", help="'none', 'default' (the model's shipped profile) or a JSON")
    parser.add_argument("--data", default=str(data / "coco-mini" / "val2017"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", default="fp16,bf16")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    precisions = args.precisions.split(",")
    dtypes = {p: resolve_precision(p, device) for p in precisions}
    reference_model = load_model(args.model, weights=args.weights)
    models = {p: place_model(load_model(args.model, weights=args.weights), device, dtypes[p]) for p in precisions}
    cut = args.cut or reference_model.default_cut
    profile = None
    if args.codec == "default":
        from splitinfer.services.profiles import packaged_profile

        profile = CodecProfile.load(str(packaged_profile(args.model)))
    elif args.codec != "none":
        profile = CodecProfile.load(args.codec)
    if profile is not None and profile.cut is not None:
        cut = profile.cut
    roundtrip = SequenceRoundtrip(profile) if profile is not None else None
    split = reference_model.split(cut)
    splits = {p: m.split(cut) for p, m in models.items()}
    folder = Path(args.data)
    coco_gt, ids_by_name = _load_coco(coco_annotations_for(folder))
    reference, other = {}, {p: {} for p in precisions}
    for frame in iter_source(folder, step=1, limit=args.limit):
        if frame.image is None or frame.key not in ids_by_name:
            continue
        image_id = ids_by_name[frame.key]
        x, info = reference_model.preprocess(frame.image)
        sent = split.head(x)
        if roundtrip is not None:
            decoded, _ = roundtrip({k: v[0].numpy() for k, v in sent.items()})
            sent = {k: torch.from_numpy(v[None]) for k, v in decoded.items()}
        reference[image_id] = reference_model.postprocess(split.tail(sent), info, score_threshold=EVAL_SCORE_THRESHOLD)
        for p in precisions:
            inputs = {k: v.to(device, dtypes[p]) for k, v in sent.items()}
            with torch.no_grad():
                outputs = splits[p].tail(inputs)
            other[p][image_id] = models[p].postprocess_batch(outputs, [info], score_threshold=EVAL_SCORE_THRESHOLD)[0]
    category_ids = sorted(coco_gt.getCatIds())
    image_ids = sorted(reference)
    ref_ap = PerImageAP(coco_gt, to_coco_results(reference, category_ids), image_ids)
    ap_ref, ap50_ref = ref_ap.ap()
    ref_loo = ref_ap.leave_one_out()
    live = {i: [d for d in dets if d.score >= LIVE_SCORE_THRESHOLD] for i, dets in reference.items()}
    print(f"model {args.model}  cut {split.cut}  codec {args.codec}  images {len(image_ids)}  device {device}"
          f"  ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, torch {torch.__version__})")
    print("| tail | AP | AP50 | AP50 - fp32 (SE) | AP - fp32 (SE) | fidelity AP50 | lost / added of "
          f"{sum(map(len, live.values()))} |")
    print("|---|---|---|---|---|---|---|")
    print(f"| fp32 (CPU) | {ap_ref:.4f} | {ap50_ref:.4f} | - | - | 1 | 0 / 0 |")
    for p in precisions:
        ap = PerImageAP(coco_gt, to_coco_results(other[p], category_ids), image_ids)
        ap_p, ap50_p = ap.ap()
        delta = ap.leave_one_out() - ref_loo
        lost = added = 0
        for i in live:
            a, b = count_lost_added(live[i], [d for d in other[p][i] if d.score >= LIVE_SCORE_THRESHOLD])
            lost, added = lost + a, added + b
        fidelity = fidelity_ap50(live, other[p], len(reference_model.class_names))
        print(f"| {p} ({device}) | {ap_p:.4f} | {ap50_p:.4f} | {ap50_p - ap50_ref:+.4f} ({jackknife_se(delta[:, 1]):.4f}) "
              f"| {ap_p - ap_ref:+.4f} ({jackknife_se(delta[:, 0]):.4f}) | {fidelity:.4f} | {lost} / {added} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
