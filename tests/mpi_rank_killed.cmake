# A rank killed in the middle of a run must end the whole job with an error, promptly: mpirun
# notices the dead process and stops the others, which wait in a collective call.
#   -DMPIRUN=<mpirun command;list> -DPROGRAM=<test_mpi>
cmake_minimum_required(VERSION 3.25)
string(TIMESTAMP started "%s")
execute_process(COMMAND ${MPIRUN} ${PROGRAM} die TIMEOUT 120 RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
string(TIMESTAMP finished "%s")
math(EXPR seconds "${finished} - ${started}")
if(rc MATCHES "timeout")
  message(FATAL_ERROR "mpirun still ran after 120 s with a rank killed: the job hangs")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "mpirun exited 0 although a rank was killed:\n${out}${err}")
endif()
message(STATUS "ok: mpirun exited with '${rc}' after ${seconds} s")
