#!/usr/bin/env python3
"""PyTorch's quickstart on the same Fashion-MNIST files, for a side-by-side with
`gradstep train` (same printed lines, plus a speed summary on stderr).

    python scripts/torch_quickstart.py --epochs 1 --save /tmp/torch.safetensors
    gradstep eval --load /tmp/torch.safetensors

Needs torch (CPU is enough) and, for --save, safetensors. torchvision is not needed: the
IDX files are read here, with ToTensor's semantics (bytes / 255 as float32).
"""
import argparse
import gzip
import os
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "data", "fashion-mnist")


def read_idx(path):
    """An IDX file of unsigned bytes (raw or gzip) as a uint8 tensor."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    body = raw[4 + 4 * rank :]
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_split(data_dir, prefix, limit):
    def find(stem):
        for name in (stem + ".gz", stem):
            p = os.path.join(data_dir, name)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(os.path.join(data_dir, stem + ".gz"))

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = images.to(torch.float32).div(255).unsqueeze(1)  # ToTensor: [N, 1, 28, 28] in [0, 1]
    return TensorDataset(x, labels.to(torch.int64))


class NeuralNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )

    def forward(self, x):
        x = self.flatten(x)
        logits = self.linear_relu_stack(x)
        return logits


def train_loop(dataloader, model, loss_fn, optimizer):
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if batch % 100 == 0:
            loss, current = loss.item(), batch * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")


def test_loop(dataloader, model, loss_fn):
    model.eval()
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    test_loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    print(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--data-dir", default=DEFAULT_DATA)
    ap.add_argument("--train-samples", type=int, default=None)
    ap.add_argument("--test-samples", type=int, default=None)
    ap.add_argument("--save", default=None, help="safetensors file of model.state_dict()")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    training_data = load_split(args.data_dir, "train", args.train_samples)
    test_data = load_split(args.data_dir, "t10k", args.test_samples)
    train_dataloader = DataLoader(training_data, batch_size=args.batch_size, shuffle=True)
    test_dataloader = DataLoader(test_data, batch_size=args.batch_size)

    device = "cpu"
    print(f"Using {device} device")
    model = NeuralNetwork().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    train_seconds, batches = 0.0, 0
    for t in range(args.epochs):
        print(f"Epoch {t+1}\n-------------------------------")
        start = time.perf_counter()
        train_loop(train_dataloader, model, loss_fn, optimizer)
        train_seconds += time.perf_counter() - start
        batches += len(train_dataloader)
        test_loop(test_dataloader, model, loss_fn)
    print("Done!")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads: trained {batches} batches "
        f"in {train_seconds:.2f} s: {batches / train_seconds:.1f} batches/s",
        file=sys.stderr,
    )
    if args.save:
        from safetensors.torch import save_file

        save_file(model.state_dict(), args.save)
        print(f"saved {args.save}", file=sys.stderr)


if __name__ == "__main__":
    main()
