"""A constructed ground truth and detections with one detection of each TIDE error type, shared
by the error-analysis tests."""


def _obj(i, image, cat, box):
    return {"id": i, "image_id": image, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}


GT = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
      "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
      "annotations": [_obj(1, 1, 1, [10, 10, 30, 30]), _obj(2, 1, 2, [60, 60, 30, 30]),
                      _obj(3, 2, 1, [0, 0, 20, 20]), _obj(4, 2, 2, [50, 0, 40, 40])]}
# one detection per error type, by construction (the comment names the object it concerns)
DETS = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.9},  # found: object 1
        {"image_id": 1, "category_id": 1, "bbox": [11, 11, 30, 30], "score": 0.8},  # duplicate of object 1
        {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.7},  # classification: object 2
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.6},  # localisation: object 3, IoU .39
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 30], "score": 0.55},  # both: object 3, IoU .25
        {"image_id": 2, "category_id": 1, "bbox": [70, 60, 30, 30], "score": 0.5}]  # background
# object 4 is found by no detection and pointed at by no classification or localisation error: missed
