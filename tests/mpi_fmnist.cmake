# fmnist under mpirun -np 2 (CTest runs it with cmake -P): data-parallel training of the seed
# model with synchronised BatchNorm trains (the loss falls, the accuracy is far above chance),
# rank 0 alone writes one set of outputs that record the ranks, the run resumes on 2 ranks
# with per-rank statistics, and its checkpoint evaluates in one process. Reads a subset of the
# data like fmnist_smoke; exits with 77 (skipped) when the data is missing.
#   -DMPIRUN=<mpirun command;list> -DFMNIST=<fmnist> -DSUBSET=<fmnist_subset> -DDATA=<dir>
#   -DOUT=<scratch dir>
cmake_minimum_required(VERSION 3.25)

include(${CMAKE_CURRENT_LIST_DIR}/fmnist_run.cmake)

if(NOT EXISTS ${DATA}/train-images-idx3-ubyte.gz AND NOT EXISTS ${DATA}/train-images-idx3-ubyte)
  message(STATUS "no Fashion-MNIST data in ${DATA}: skipping")
  cmake_language(EXIT 77)
endif()

file(REMOVE_RECURSE ${OUT})
set(SUBSET_DATA ${OUT}-data)
file(REMOVE_RECURSE ${SUBSET_DATA})
run(TRUE "" ${SUBSET} ${DATA} ${SUBSET_DATA} 8000 2000)

run(TRUE "data parallel: 2 ranks x 1 threads, global batch 128 \\(64 or 64 per rank\\), BatchNorm statistics synchronised.*test accuracy 0\\.[0-9]+"
    ${MPIRUN} ${FMNIST} train --model seed --limit 3000 --epochs 2 --threads 1 --sync-bn --precise-bn 5
    --data ${SUBSET_DATA} --out ${OUT})
# One set of outputs: rank 1 printed nothing (one summary, one results table).
string(REGEX MATCHALL "Total params" summaries "${last_output}")
list(LENGTH summaries n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one model summary (rank 0's), found ${n}:\n${last_output}")
endif()
file(READ ${OUT}/metrics.json metrics)
string(JSON ranks GET "${metrics}" ranks)
string(JSON sync GET "${metrics}" sync_bn)
string(JSON loss1 GET "${metrics}" epochs 0 train_loss)
string(JSON loss2 GET "${metrics}" epochs 1 train_loss)
string(JSON acc2 GET "${metrics}" epochs 1 train_accuracy)
string(JSON test_acc GET "${metrics}" test accuracy)
if(NOT ranks EQUAL 2 OR NOT sync)
  message(FATAL_ERROR "metrics.json records ranks ${ranks}, sync_bn ${sync}; expected 2, true")
endif()
message(STATUS "train loss ${loss1} -> ${loss2}, train accuracy ${acc2}, test ${test_acc}")
if(NOT loss2 LESS loss1)
  message(FATAL_ERROR "the training loss did not fall: ${loss1} -> ${loss2}")
endif()
if(acc2 LESS 0.5 OR test_acc LESS 0.5)
  message(FATAL_ERROR "accuracy ${acc2} (train), ${test_acc} (test) is not far above chance")
endif()
foreach(f best.mrm last.mrm curves.csv curves.svg)
  if(NOT EXISTS ${OUT}/${f})
    message(FATAL_ERROR "fmnist train under mpirun did not write ${OUT}/${f}")
  endif()
endforeach()

# Resumed on 2 ranks, per-rank BatchNorm statistics; then evaluated by one process.
run(TRUE "BatchNorm statistics per rank.*resuming after epoch 2.*test accuracy 0\\.[0-9]+"
    ${MPIRUN} ${FMNIST} train --out ${OUT} --resume --epochs 3 --threads 1 --data ${SUBSET_DATA})
file(READ ${OUT}/metrics.json metrics)
string(JSON epochs LENGTH "${metrics}" epochs)
if(NOT epochs EQUAL 3)
  message(FATAL_ERROR "metrics.json holds ${epochs} epochs after the resume, expected 3")
endif()
run(TRUE "test accuracy 0\\.[0-9]+" ${FMNIST} evaluate --model-file ${OUT}/best.mrm --threads 1
    --data ${SUBSET_DATA})
# A bad setting fails on every rank and ends the job with an error, without hanging.
run(FALSE "--out .* already holds a run" ${MPIRUN} ${FMNIST} train --model seed --limit 1000
    --epochs 1 --threads 1 --data ${SUBSET_DATA} --out ${OUT})
